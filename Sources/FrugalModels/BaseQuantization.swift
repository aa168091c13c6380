// BaseQuantization: QLoRA-style quantize-on-load — a frozen base's block projections re-encoded
// as NF4 or q8_0 on the host, a tensor at a time, and the count of what was left as stored.
import Foundation
import FrugalCore

/// What quantizing a frozen base on load did: how many block projections (q, k, v, o, gate, up,
/// down, fused ones counted by part) are stored as `dtype`, and how many were left as stored
/// because their rows (the projection's inputs) are not a whole number of `dtype` blocks, or
/// their stored type is already as small (a q4 GGUF asked for q8_0).
///
/// Embeddings, the head, norms and biases are never quantized: the projections hold most of a
/// model's weights, and the others feed or read the residual stream directly.
public struct BaseQuantization: Sendable, Equatable {
    /// The packed type the projections were quantized to.
    public var dtype: DType
    /// Block projections stored as `dtype`.
    public var quantized: Int
    /// Block projections in another dtype (rows not whole blocks of `dtype`, or stored as small).
    public var leftAsStored: Int

    /// Counts the block projections of `weights` stored as `dtype` and those that are not.
    /// - Note: a projection already stored as `dtype` counts as quantized.
    public init(_ weights: DecoderWeights, dtype: DType) {
        self.dtype = dtype
        let projections = weights.blocks.flatMap { block in ProjectionRole.allCases.compactMap { block[$0] } }
        quantized = projections.filter { $0.weight.dtype == dtype }.count
        leftAsStored = projections.count - quantized
    }

    /// Throws `FrugalError.invalidArgument`, naming the choices, unless `quantize` can write `dtype`.
    public static func check(_ dtype: DType) throws {
        guard BlockQuantization.quantizableTypes.contains(dtype) else {
            throw FrugalError.invalidArgument("cannot quantize a base to \(dtype.rawValue) (choices: "
                + BlockQuantization.quantizableTypes.map(\.rawValue).joined(separator: ", ") + ")")
        }
    }

    /// The bytes of a projection weight (outputs, inputs) re-encoded as `dtype`, row by row on all
    /// cores (decoded to f32 one row at a time, so no f32 copy of the tensor exists); nil when
    /// its rows are not whole `dtype` blocks or its stored rows take no more bytes than `dtype`'s
    /// (re-encoding would add error and save nothing).
    ///
    /// - Parameters:
    ///   - stored: a 2-D tensor whose bytes match its shape and dtype.
    ///   - dtype: one of `BlockQuantization.quantizableTypes`.
    ///   - name: the tensor's name, for errors.
    /// - Throws: `FrugalError.invalidArgument` when the tensor holds a NaN or an infinity.
    static func encode(_ stored: StoredTensor, as dtype: DType, name: String) throws -> [UInt8]? {
        let rows = stored.shape.rows, inputs = stored.shape.last
        guard inputs % dtype.blockSize == 0, let rowBytes = dtype.byteCount(elements: inputs),
              let storedRowBytes = stored.dtype.byteCount(elements: inputs), storedRowBytes > rowBytes else { return nil }
        precondition(stored.bytes.count == rows * storedRowBytes, "encode: \(name) holds \(stored.bytes.count) bytes")
        var out = [UInt8](repeating: 0, count: rows * rowBytes)
        let chunk = max(1, 1 << 20 / inputs), chunks = (rows + chunk - 1) / chunk
        var finite = [Bool](repeating: true, count: chunks)
        out.withUnsafeMutableBytes { outBuffer in
            finite.withUnsafeMutableBufferPointer { flags in
                nonisolated(unsafe) let destination = outBuffer.baseAddress!, allFinite = flags.baseAddress!
                nonisolated(unsafe) let source = stored.bytes.baseAddress!
                let from = stored.dtype
                DispatchQueue.concurrentPerform(iterations: chunks) { index in
                    withUnsafeTemporaryAllocation(of: Float.self, capacity: inputs) { row in
                        let values = row.baseAddress!
                        for r in index * chunk..<min(rows, (index + 1) * chunk) {
                            BlockQuantization.dequantize(from, source + r * storedRowBytes, values, count: inputs)
                            guard row.allSatisfy(\.isFinite) else { allFinite[index] = false; return }
                            BlockQuantization.quantize(dtype, values, destination + r * rowBytes, count: inputs)
                        }
                    }
                }
            }
        }
        guard finite.allSatisfy({ $0 }) else {
            throw FrugalError.invalidArgument("tensor '\(name)' holds a NaN or an infinity and cannot be quantized")
        }
        return out
    }
}
