// CPUCrossEntropy: the final projection fused with cross-entropy and its backward, chunked over
// rows so the full (rows, vocabulary) logits never exist.
import Foundation
import FrugalCore

extension CPUBackend {
    /// Rows of hidden states whose logits exist at once (`ScratchSizing.cpuCrossEntropyChunkRows`;
    /// a packed head is widened once per chunk, a few percent of the chunk's GEMMs).
    static let crossEntropyChunkRows = ScratchSizing.cpuCrossEntropyChunkRows

    /// Cross-entropy of `hidden·headᵀ` against `targets`, `crossEntropyChunkRows` rows at a time:
    /// logits `z = hidden·headᵀ` (`linear`), per row `loss = log Σ exp(z − max) − (z_target − max)`
    /// and `dz = (softmax(z) − onehot(target))·gradientScale` in place of the logits, then
    /// `dHidden = dz·head` (=) and `dHead += dzᵀ·hidden` (+=, `linearBackward`).
    ///
    /// Rows whose target is ignored (< 0) cost nothing: when some are, the others are gathered
    /// into a workspace first, and the ignored rows of `dHidden` are zero.
    /// - Returns: the sum of the per-token losses over targets ≥ 0 (unscaled).
    public func crossEntropy(hidden: Tensor, head: Tensor, targets: [Int32], dHidden: Tensor?, dHead: Tensor?,
                             gradientScale: Float) -> Double {
        return profile.measure("crossEntropy") {
            let rows = hidden.shape.rows, vocabulary = head.shape.rows, width = hidden.shape.last
            precondition(head.shape.last == width && targets.count == rows,
                         "crossEntropy: hidden \(hidden.shape), head \(head.shape), \(targets.count) targets")
            if let dHidden { precondition(dHidden.count == hidden.count, "crossEntropy: dHidden \(dHidden.shape)") }
            for target in targets {
                precondition(target < vocabulary, "target \(target) outside the vocabulary of \(vocabulary)")
            }
            let kept = targets.indices.filter { targets[$0] >= 0 }
            if kept.count == rows {
                return crossEntropyRows(hidden: hidden, head: head, targets: targets, dHidden: dHidden, dHead: dHead,
                                        gradientScale: gradientScale)
            }
            if let dHidden { zero(dHidden) }
            if kept.isEmpty { return 0 }
            // (kept, width) the rows that carry a loss, and their gradient
            let gathered = empty([kept.count, width], .f32, .workspace)
            let gatheredGradient = dHidden == nil ? nil : empty([kept.count, width], .f32, .workspace)
            let source = hidden.floats.baseAddress!, packed = gathered.floats.baseAddress!
            for (r, row) in kept.enumerated() { (packed + r * width).update(from: source + row * width, count: width) }
            let loss = crossEntropyRows(hidden: gathered, head: head, targets: kept.map { targets[$0] },
                                        dHidden: gatheredGradient, dHead: dHead, gradientScale: gradientScale)
            if let dHidden, let gatheredGradient {
                let d = dHidden.floats.baseAddress!, g = gatheredGradient.floats.baseAddress!
                for (r, row) in kept.enumerated() { (d + row * width).update(from: g + r * width, count: width) }
            }
            return loss
        }
    }

    /// `crossEntropy` over rows whose targets are all ≥ 0.
    private func crossEntropyRows(hidden: Tensor, head: Tensor, targets: [Int32], dHidden: Tensor?, dHead: Tensor?,
                                  gradientScale: Float) -> Double {
        let rows = hidden.shape.rows, vocabulary = head.shape.rows
        let gradient = dHidden != nil || dHead != nil
        let chunkRows = max(1, min(rows, Self.crossEntropyChunkRows))
        // (chunkRows, vocabulary) the logits of one chunk, then their gradient
        let logits = empty([chunkRows, vocabulary], .f32, .workspace)
        let z = logits.floats.baseAddress!
        var loss: Double = 0
        var losses = [Double](repeating: 0, count: chunkRows)
        withExtendedLifetime(logits) {
            for r0 in stride(from: 0, to: rows, by: chunkRows) {
                let range = r0..<min(rows, r0 + chunkRows)
                let x = hidden.rows(range), chunk = logits.rows(0..<range.count)
                linear(chunk, x, head, bias: nil)
                losses.withUnsafeMutableBufferPointer { losses in
                    parallelChunks(range.count, minimumChunk: 1) { chunkRange in
                        for r in chunkRange {
                            losses[r] = Self.softmaxCrossEntropy(z + r * vocabulary, vocabulary, target: Int(targets[r0 + r]),
                                                                 gradientScale: gradientScale, gradient: gradient)
                        }
                    }
                }
                loss += losses[0..<range.count].reduce(0, +)
                if gradient {
                    linearBackward(dx: dHidden?.rows(range), dWeight: dHead, dBias: nil, dy: chunk, x: x, weight: head)
                }
            }
        }
        return loss
    }

    /// The loss of one row of logits (`target` ≥ 0), `Σ exp` in double precision; with
    /// `gradient`, the row is overwritten by `(softmax − onehot)·gradientScale`.
    private static func softmaxCrossEntropy(_ row: UnsafeMutablePointer<Float>, _ vocabulary: Int, target: Int,
                                           gradientScale: Float, gradient: Bool) -> Double {
        let maximum = VectorMath.maximum(row, vocabulary)
        let targetLogit = row[target] - maximum
        let total: Double
        if gradient {
            total = VectorMath.expShifted(row, row, vocabulary, shift: maximum)
            let k = Float(Double(gradientScale) / total)
            for j in 0..<vocabulary { row[j] *= k }
            row[target] -= gradientScale
        } else {
            total = withUnsafeTemporaryAllocation(of: Float.self, capacity: 256) { scratch in
                var sum: Double = 0
                for j0 in stride(from: 0, to: vocabulary, by: 256) {
                    sum += VectorMath.expShifted(row + j0, scratch.baseAddress!, min(256, vocabulary - j0), shift: maximum)
                }
                return sum
            }
        }
        return log(total) - Double(targetLogit)
    }
}
