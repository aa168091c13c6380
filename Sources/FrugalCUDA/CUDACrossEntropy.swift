// CUDACrossEntropy: the final projection fused with cross-entropy on the GPU, in chunks of rows
// so the full (rows, vocabulary) logits never exist: each chunk's logits by cuBLASLt, then
// softmax, loss and dlogits in one kernel (Kernels/cross_entropy.cu), then two GEMMs back.
import Foundation
import FrugalCore

extension CUDABackend {
    /// Cross-entropy of `hidden·headᵀ` against `targets`, chunk by chunk: logits (`linear`), per row
    /// the loss and `dz = (softmax − onehot)·gradientScale` in place, then `dHidden = dz·head` (=)
    /// and `dHead += dzᵀ·hidden` (+=). A chunk whose targets are all ignored only zeroes its
    /// `dHidden` rows. The loss total stays on the device until the one download at the end.
    /// - Returns: the sum of the per-token losses over targets ≥ 0 (unscaled).
    public func crossEntropy(hidden: Tensor, head: Tensor, targets: [Int32], dHidden: Tensor?, dHead: Tensor?,
                             gradientScale: Float) -> Double {
        let rows = hidden.shape.rows, vocabulary = head.shape.rows
        precondition(head.shape.last == hidden.shape.last && targets.count == rows,
                     "crossEntropy: hidden \(hidden.shape), head \(head.shape), \(targets.count) targets")
        if let dHidden { precondition(dHidden.count == hidden.count && dHidden.dtype == .f32, "crossEntropy: dHidden \(dHidden.shape)") }
        for target in targets { precondition(target < vocabulary, "target \(target) outside the vocabulary of \(vocabulary)") }
        guard rows > 0 else { return 0 }
        let gradient = dHidden != nil || dHead != nil
        let chunkRows = ScratchSizing.crossEntropyChunkRows(rows: rows, vocabulary: vocabulary, tileBytes: options.tileBytes)
        let totalBits: UInt64 = must("crossEntropy of \(rows) rows over \(vocabulary)") {
            // (chunkRows, vocabulary) one chunk's logits, then their gradient; (chunkRows) losses; the total (double)
            let logits = try allocate([chunkRows, vocabulary], .f32, .workspace)
            let losses = try allocate([chunkRows], .f32, .workspace)
            let total = try allocate([2], .f32, .workspace)
            try driver.memsetAsync(total.address, 0, bytes: 8, stream: stream)
            let ids = try stage(targets)
            for first in stride(from: 0, to: rows, by: chunkRows) {
                let range = first..<min(rows, first + chunkRows)
                if !targets[range].contains(where: { $0 >= 0 }) {
                    if let dHidden { zero(dHidden.rows(range)) }
                    continue
                }
                let x = hidden.rows(range), chunk = logits.rows(0..<range.count)
                linear(chunk, x, head, bias: nil)
                try launch(CUDAKernels.crossEntropyRows, grid: (range.count, 1, 1), block: (512, 1, 1),
                           [chunk.address, losses.address, ids.address + UInt64(first * 4), i32(range.count), i32(vocabulary),
                            gradientScale, Int32(gradient ? 1 : 0)])
                try launch(CUDAKernels.crossEntropyTotal, grid: (1, 1, 1), block: (256, 1, 1),
                           [total.address, losses.address, i32(range.count)])
                if gradient {
                    linearBackward(dx: dHidden?.rows(range), dWeight: dHead, dBias: nil, dy: chunk, x: x, weight: head)
                }
            }
            return downloadBytes(total.reshaped([2])).withUnsafeBytes { $0.load(as: UInt64.self) }
        }
        return Double(bitPattern: totalBits)
    }
}
