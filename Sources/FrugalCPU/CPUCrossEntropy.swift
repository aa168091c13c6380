// CPUCrossEntropy: the final projection fused with cross-entropy and its backward, chunked over
// rows so the full (rows, vocabulary) logits never exist.
import Foundation
import FrugalCore

extension CPUBackend {
    /// Rows of hidden states whose logits exist at once.
    static let crossEntropyChunkRows = 64

    /// Cross-entropy of `hidden·headᵀ` against `targets`, `crossEntropyChunkRows` rows at a time:
    /// logits `z = hidden·headᵀ` (`linear`), per row `loss = log Σ exp(z − max) − (z_target − max)`
    /// and `dz = (softmax(z) − onehot(target))·gradientScale` (0 for an ignored row) in place of
    /// the logits, then `dHidden = dz·head` (=) and `dHead += dzᵀ·hidden` (+=, `linearBackward`).
    /// A chunk whose targets are all ignored costs nothing but zeroing its `dHidden` rows.
    /// - Returns: the sum of the per-token losses over targets ≥ 0 (unscaled).
    public func crossEntropy(hidden: Tensor, head: Tensor, targets: [Int32], dHidden: Tensor?, dHead: Tensor?,
                             gradientScale: Float) -> Double {
        let rows = hidden.shape.rows, vocabulary = head.shape.rows
        precondition(head.shape.last == hidden.shape.last && targets.count == rows,
                     "crossEntropy: hidden \(hidden.shape), head \(head.shape), \(targets.count) targets")
        if let dHidden { precondition(dHidden.count == hidden.count, "crossEntropy: dHidden \(dHidden.shape)") }
        for target in targets {
            precondition(target < vocabulary, "target \(target) outside the vocabulary of \(vocabulary)")
        }
        let gradient = dHidden != nil || dHead != nil
        let chunkRows = max(1, min(rows, Self.crossEntropyChunkRows))
        // (chunkRows, vocabulary) the logits of one chunk, then their gradient
        let logits = zeros([chunkRows, vocabulary], .f32, .workspace)
        let z = logits.floats.baseAddress!
        var loss: Double = 0
        withExtendedLifetime(logits) {
            for r0 in stride(from: 0, to: rows, by: chunkRows) {
                let range = r0..<min(rows, r0 + chunkRows)
                if !targets[range].contains(where: { $0 >= 0 }) {
                    if let dHidden { zero(dHidden.rows(range)) }
                    continue
                }
                let x = hidden.rows(range), chunk = logits.rows(0..<range.count)
                linear(chunk, x, head, bias: nil)
                var losses = [Double](repeating: 0, count: range.count)
                losses.withUnsafeMutableBufferPointer { losses in
                    parallelChunks(range.count, minimumChunk: 1) { chunkRange in
                        for r in chunkRange {
                            losses[r] = Self.softmaxCrossEntropy(z + r * vocabulary, vocabulary, target: Int(targets[r0 + r]),
                                                                 gradientScale: gradientScale, gradient: gradient)
                        }
                    }
                }
                loss += losses.reduce(0, +)
                if gradient {
                    linearBackward(dx: dHidden?.rows(range), dWeight: dHead, dBias: nil, dy: chunk, x: x, weight: head)
                }
            }
        }
        return loss
    }

    /// The loss of one row of logits (0 when `target` < 0), the sums in double precision; with
    /// `gradient`, the row is overwritten by `(softmax − onehot)·gradientScale` (zeros when ignored).
    private static func softmaxCrossEntropy(_ row: UnsafeMutablePointer<Float>, _ vocabulary: Int, target: Int,
                                           gradientScale: Float, gradient: Bool) -> Double {
        if target < 0 {
            if gradient { for j in 0..<vocabulary { row[j] = 0 } }
            return 0
        }
        var maximum = -Float.infinity
        for j in 0..<vocabulary { maximum = max(maximum, row[j]) }
        let targetLogit = row[target] - maximum
        var total: Double = 0
        for j in 0..<vocabulary {
            let e = exp(Double(row[j] - maximum))
            total += e
            if gradient { row[j] = Float(e) }
        }
        if gradient {
            let k = Double(gradientScale) / total
            for j in 0..<vocabulary { row[j] = Float(Double(row[j]) * k) }
            row[target] -= gradientScale
        }
        return log(total) - Double(targetLogit)
    }
}
