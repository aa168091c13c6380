// CUDAEmbedding: token embedding lookup and its backward on the GPU (Kernels/embedding.cu).
import Foundation
import FrugalCore

extension CUDABackend {
    // MARK: - Embedding

    public func embedding(_ out: Tensor, _ table: Tensor, tokens: [Int32]) {
        let d = table.shape.last, vocabulary = table.shape.rows
        precondition(out.shape.rows == tokens.count && out.shape.last == d && out.dtype == .f32, "embedding: out \(out.shape)")
        for id in tokens { precondition(id >= 0 && Int(id) < vocabulary, "token id \(id) outside the vocabulary of \(vocabulary)") }
        guard !tokens.isEmpty else { return }
        must("embedding of \(tokens.count) tokens") {
            let ids = try stage(tokens)
            let threads = table.dtype.isQuantized ? max(32, min(256, d / table.dtype.blockSize)) : 256
            try launch(CUDAKernels.embeddingForward(table.dtype), grid: (tokens.count, 1, 1), block: ((threads + 31) / 32 * 32, 1, 1),
                       [out.address, table.address, ids.address, i32(tokens.count), i32(d)])
        }
    }

    /// `dTable[tokens[t]] += dy[t]` (+=; repeated tokens meet in atomic adds).
    public func embeddingBackward(_ dTable: Tensor, dy: Tensor, tokens: [Int32]) {
        let d = dTable.shape.last, vocabulary = dTable.shape.rows
        precondition(dTable.dtype == .f32 && dy.shape.rows == tokens.count && dy.shape.last == d,
                     "embeddingBackward: dTable \(dTable.shape) \(dTable.dtype), dy \(dy.shape), \(tokens.count) tokens")
        for id in tokens { precondition(id >= 0 && Int(id) < vocabulary, "token id \(id) outside the vocabulary of \(vocabulary)") }
        guard !tokens.isEmpty else { return }
        must("embeddingBackward of \(tokens.count) tokens") {
            let ids = try stage(tokens)
            try launch(CUDAKernels.embeddingBackward, rows: tokens.count,
                       [dTable.address, dy.address, ids.address, i32(tokens.count), i32(d)])
        }
    }
}
