// SequenceBatch: whole sequences right-padded into rows of one length, and the log-probabilities
// of their targets — summed per sequence (reward, DPO) or per token (PPO) — with gradients.
import Foundation
import FrugalCore
import FrugalModels

/// Sequences laid one per row and right-padded to the longest, so that a plain causal forward
/// (no segments) gives every real position the states it has alone: padding only follows.
public struct SequenceBatch: Sendable {
    /// The rows as the decoder takes them (padding: `padTokenID`, no target).
    public let batch: TrainingBatch
    /// Positions per row.
    public let length: Int
    /// Tokens of each row's sequence.
    public let counts: [Int]

    /// A batch of `sequences`, one per row.
    public init(_ sequences: [TokenizedExample], padTokenID: Int32 = 0) {
        precondition(!sequences.isEmpty, "a batch needs a sequence")
        let length = sequences.map(\.tokens.count).max()!
        var tokens = [Int32](repeating: padTokenID, count: sequences.count * length)
        var targets = [Int32](repeating: TokenizedExample.ignoredTarget, count: sequences.count * length)
        for (row, sequence) in sequences.enumerated() {
            tokens.replaceSubrange(row * length..<row * length + sequence.tokens.count, with: sequence.tokens)
            targets.replaceSubrange(row * length..<row * length + sequence.tokens.count, with: sequence.targets)
        }
        batch = TrainingBatch(tokens: tokens, targets: targets, batch: sequences.count)
        self.length = length
        counts = sequences.map(\.tokens.count)
    }

    /// Rows of the batch.
    public var rows: Int { counts.count }

    /// The positions of row `row` in the flattened (rows·length) layout.
    public func positions(of row: Int) -> Range<Int> { row * length..<(row + 1) * length }

    /// The flattened position of row `row`'s last token (a reward model reads its score there).
    public func lastPosition(of row: Int) -> Int { row * length + counts[row] - 1 }

    /// Hidden states (rows·length, embedding dim) without saving anything for backward.
    public func hiddenStates(_ decoder: Decoder) -> Tensor {
        decoder.hiddenStates(batch.tokens, batch: rows)
    }
}

/// Log-probabilities of targets under the decoder's output head, and their gradients.
public enum LogProbabilities {
    /// The summed log-probability of each row's targets: minus the fused cross-entropy over the
    /// row's positions.
    ///
    /// With `dHidden`, writes it (=) with the gradient of each row's own log-probability in that
    /// row's positions (`crossEntropy` with `gradientScale` −1, its loss being −log p). Rows do
    /// not mix, so scaling a row's slice by a coefficient gives the gradient of
    /// `Σ_row coefficient_row · logp_row` (DPO's); the head itself gets no gradient here.
    public static func perSequence(_ hidden: Tensor, head: Tensor, _ sequences: SequenceBatch, backend: TrainingBackend,
                                   dHidden: Tensor? = nil) -> [Double] {
        (0..<sequences.rows).map { row in
            let positions = sequences.positions(of: row)
            return -backend.crossEntropy(hidden: hidden.rows(positions), head: head,
                                         targets: Array(sequences.batch.targets[positions]),
                                         dHidden: dHidden?.rows(positions), dHead: nil, gradientScale: -1)
        }
    }

    /// Rows of logits computed at once.
    static let chunkRows = 64

    /// The log-probability of each position's target (0 where there is none), chunk by chunk so
    /// that full logits never exist.
    ///
    /// With `dHidden`, `coefficient(position, logp)` gives `∂loss/∂logp` of each position with a
    /// target from its fresh log-probability (PPO's clipped objective needs it), and `dHidden` is
    /// written (=) for that loss; the head's gradient accumulates into `dHead` (+=) when given.
    public static func perToken(_ hidden: Tensor, head: Tensor, targets: [Int32], backend: TrainingBackend,
                                dHidden: Tensor? = nil, dHead: Tensor? = nil,
                                coefficient: (Int, Double) -> Float = { _, _ in 0 }) -> [Double] {
        let rows = hidden.shape.rows, vocabulary = head.shape.rows
        precondition(targets.count == rows, "one target per row of hidden states")
        var logProbabilities = [Double](repeating: 0, count: rows)
        for start in stride(from: 0, to: rows, by: chunkRows) {
            let range = start..<min(rows, start + chunkRows)
            guard targets[range].contains(where: { $0 >= 0 }) else {
                if let dHidden { backend.zero(dHidden.rows(range)) }
                continue
            }
            let logits = backend.zeros([range.count, vocabulary], .f32, .workspace)
            backend.linear(logits, hidden.rows(range), head, bias: nil)
            var values = backend.download(logits)
            for (r, position) in range.enumerated() {
                let target = Int(targets[position])
                let row = r * vocabulary
                guard target >= 0 else {
                    if dHidden != nil { for j in 0..<vocabulary { values[row + j] = 0 } }
                    continue
                }
                var maximum = -Float.infinity
                for j in 0..<vocabulary { maximum = max(maximum, values[row + j]) }
                var total = 0.0
                for j in 0..<vocabulary { total += exp(Double(values[row + j] - maximum)) }
                let logp = Double(values[row + target] - maximum) - log(total)
                logProbabilities[position] = logp
                guard dHidden != nil else { continue }
                // ∂(c·logp)/∂z_j = c·(onehot_j − softmax_j)
                let c = Double(coefficient(position, logp))
                for j in 0..<vocabulary { values[row + j] = Float(-c * exp(Double(values[row + j] - maximum)) / total) }
                values[row + target] += Float(c)
            }
            guard let dHidden else { continue }
            let dLogits = values.withUnsafeBytes { backend.upload($0, [range.count, vocabulary], .f32, .workspace) }
            backend.linearBackward(dx: dHidden.rows(range), dWeight: dHead, dBias: nil, dy: dLogits, x: hidden.rows(range),
                                   weight: head)
        }
        return logProbabilities
    }
}
