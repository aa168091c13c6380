// TokenizedExample: a token sequence and its next-token targets, with the loss mask in them.

/// A token sequence and, at each position, the token the model learns to predict there.
///
/// Targets are already shifted: `targets[t]` is the token that follows position `t` in the
/// source (`tokens[t + 1]` inside the sequence), or `ignoredTarget` (-100) where position `t`
/// is not trained. This is Hugging Face's `labels` shifted left by one, so the loss compares
/// the logits at `t` with `targets[t]` and needs no shift of its own.
public struct TokenizedExample: Sendable, Equatable {
    /// The target of a position that is not trained (PyTorch's `ignore_index`).
    public static let ignoredTarget: Int32 = -100

    /// Input token ids.
    public var tokens: [Int32]
    /// The token to predict at each position, or `ignoredTarget`; as many as `tokens`.
    public var targets: [Int32]

    /// A sequence; `tokens` and `targets` must have the same count.
    public init(tokens: [Int32], targets: [Int32]) {
        precondition(tokens.count == targets.count, "tokens and targets differ in length")
        self.tokens = tokens
        self.targets = targets
    }

    /// A sequence whose targets are the following tokens where `trained` is true.
    /// - Parameter trained: Per token, whether predicting it is trained; the first token has
    ///   no position that predicts it.
    init(tokens: [Int32], trained: [Bool]) {
        var targets = [Int32](repeating: Self.ignoredTarget, count: tokens.count)
        for position in targets.indices.dropLast() where trained[position + 1] {
            targets[position] = tokens[position + 1]
        }
        self.init(tokens: tokens, targets: targets)
    }

    /// Positions whose target is a token: what the loss averages over.
    public var targetTokenCount: Int {
        targets.reduce(0) { $0 + ($1 == Self.ignoredTarget ? 0 : 1) }
    }

    /// The sequence cut into consecutive pieces of at most `length` tokens. A piece's last
    /// target stays the token that follows it in the source.
    public func pieces(ofLength length: Int) -> [TokenizedExample] {
        precondition(length > 0, "piece length must be positive")
        return stride(from: 0, to: tokens.count, by: length).map { start in
            let end = min(start + length, tokens.count)
            return TokenizedExample(tokens: Array(tokens[start..<end]), targets: Array(targets[start..<end]))
        }
    }
}
