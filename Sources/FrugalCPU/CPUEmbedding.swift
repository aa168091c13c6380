// CPUEmbedding: token embedding lookup and its backward on the CPU.
import Foundation
import FrugalCore

extension CPUBackend {
    // MARK: - Embedding

    public func embedding(_ out: Tensor, _ table: Tensor, tokens: [Int32]) {
        profile.measure("embedding") {
            let d = table.shape.last, rowBytes = table.dtype.byteCount(elements: d)!
            precondition(out.shape.rows == tokens.count && out.shape.last == d, "embedding: out \(out.shape)")
            let y = out.floats.baseAddress!, source = UnsafeRawPointer(table.rawPointer), dtype = table.dtype
            let vocabulary = table.shape.rows
            tokens.withUnsafeBufferPointer { ids in
                parallelChunks(ids.count, minimumChunk: 16) { range in
                    for t in range {
                        let id = Int(ids[t])
                        precondition(id >= 0 && id < vocabulary, "token id \(id) outside the vocabulary of \(vocabulary)")
                        BlockQuantization.dequantize(dtype, source + id * rowBytes, y + t * d, count: d)
                    }
                }
            }
        }
    }

    /// `dTable[tokens[t]] += dy[t]` (+=). Threads split the columns, so repeated tokens never race.
    public func embeddingBackward(_ dTable: Tensor, dy: Tensor, tokens: [Int32]) {
        profile.measure("embeddingBackward") {
            let d = dTable.shape.last, vocabulary = dTable.shape.rows
            precondition(dTable.dtype == .f32 && dy.shape.rows == tokens.count && dy.shape.last == d,
                         "embeddingBackward: dTable \(dTable.shape) \(dTable.dtype), dy \(dy.shape), \(tokens.count) tokens")
            let g = dTable.floats.baseAddress!, gy = dy.floats.baseAddress!
            tokens.withUnsafeBufferPointer { ids in
                for id in ids {
                    precondition(id >= 0 && Int(id) < vocabulary, "token id \(id) outside the vocabulary of \(vocabulary)")
                }
                parallelChunks(d, minimumChunk: 64) { columns in
                    for t in 0..<ids.count {
                        let row = g + Int(ids[t]) * d, source = gy + t * d
                        for c in columns { row[c] += source[c] }
                    }
                }
            }
        }
    }
}
