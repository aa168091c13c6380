// Batch: a micro-batch of token rows, with targets, packing segments and positions.

/// A micro-batch: `batch` rows of `length` positions, each row holding one sequence
/// (padding) or several laid end to end (packing). All arrays are row-major, `batch · length`.
///
/// Attention must stay inside a segment: position `i` attends to `j ≤ i` only where
/// `segments[i] == segments[j] ≠ -1`. RoPE uses `positions`, which restart at 0 with each
/// segment. Padding has segment -1, position 0, target -100 and `padTokenID` as token; its
/// outputs are never used, so an attention kernel may let a padding position attend to itself
/// alone rather than to nothing.
public struct Batch: Sendable, Equatable {
    /// The segment id of padding.
    public static let paddingSegment: Int32 = -1

    /// Input token ids.
    public let tokens: [Int32]
    /// The token to predict at each position, or -100 (`TokenizedExample.ignoredTarget`).
    public let targets: [Int32]
    /// Which sequence of its row each position belongs to (0, 1, … per row), or -1 for padding.
    public let segments: [Int32]
    /// Each position's index within its sequence.
    public let positions: [Int32]
    /// Rows.
    public let batch: Int
    /// Positions per row.
    public let length: Int
    /// Positions with a target: the count the loss is normalized by.
    public let targetTokenCount: Int

    /// A batch from rows of sequences, each row padded to `length`.
    /// - Parameters:
    ///   - rows: The sequences of each row; a row's sequences must fit in `length` together.
    ///   - length: Positions per row.
    ///   - padTokenID: The token written into padding.
    public init(rows: [[TokenizedExample]], length: Int, padTokenID: Int32) {
        let count = rows.count * length
        var tokens = [Int32](repeating: padTokenID, count: count)
        var targets = [Int32](repeating: TokenizedExample.ignoredTarget, count: count)
        var segments = [Int32](repeating: Self.paddingSegment, count: count)
        var positions = [Int32](repeating: 0, count: count)
        var targetTokenCount = 0
        for (row, sequences) in rows.enumerated() {
            var offset = row * length
            for (segment, sequence) in sequences.enumerated() {
                precondition(offset + sequence.tokens.count <= (row + 1) * length, "row \(row) is longer than \(length)")
                for position in sequence.tokens.indices {
                    tokens[offset] = sequence.tokens[position]
                    targets[offset] = sequence.targets[position]
                    segments[offset] = Int32(segment)
                    positions[offset] = Int32(position)
                    offset += 1
                }
                targetTokenCount += sequence.targetTokenCount
            }
        }
        self.tokens = tokens
        self.targets = targets
        self.segments = segments
        self.positions = positions
        batch = rows.count
        self.length = length
        self.targetTokenCount = targetTokenCount
    }
}
