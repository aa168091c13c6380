// CPUBackend: the reference backend — OpenBLAS GEMM and multi-threaded Swift loops.
import Foundation
import FrugalCore

/// The CPU implementation of `Backend`, and the reference every other backend is tested against.
///
/// GEMMs go to BLAS (loaded at run time); packed or 16-bit weights are widened a tile of rows
/// at a time into workspace, never a whole layer. Everything else is plain Swift over
/// unsafe buffers, split across cores.
public final class CPUBackend: Backend, @unchecked Sendable {
    public let device = DeviceKind.cpu
    public let ledger = MemoryLedger()
    /// The GEMM provider.
    public let blas: BLAS
    /// Output rows of a packed weight widened per GEMM call.
    static let weightTileRows = 256

    /// A CPU backend; `blas` defaults to the system's OpenBLAS when it can be loaded.
    public init(blas: BLAS = BLAS()) {
        self.blas = blas
    }

    // MARK: - Memory

    public func zeros(_ shape: Shape, _ dtype: DType, _ category: MemoryCategory) -> Tensor {
        guard let bytes = dtype.byteCount(elements: shape.count) else {
            preconditionFailure("shape \(shape) is not a whole number of \(dtype) blocks")
        }
        let size = max(bytes, 1)
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, 64, size) == 0, let pointer = raw else {
            preconditionFailure("out of host memory allocating \(size) bytes for \(category.rawValue)")
        }
        memset(pointer, 0, size)
        let storage = TensorStorage(pointer: pointer, byteCount: size, category: category, device: .cpu,
                                    ledger: ledger, release: { free($0) })
        return Tensor(storage: storage, shape: shape, dtype: dtype)
    }

    public func upload(_ bytes: UnsafeRawBufferPointer, _ shape: Shape, _ dtype: DType,
                       _ category: MemoryCategory) -> Tensor {
        let tensor = zeros(shape, dtype, category)
        precondition(bytes.count == tensor.byteCount, "upload of \(bytes.count) bytes into \(shape) \(dtype)")
        if let base = bytes.baseAddress { tensor.rawPointer.copyMemory(from: base, byteCount: bytes.count) }
        return tensor
    }

    public func download(_ tensor: Tensor) -> [Float] {
        [Float](unsafeUninitializedCapacity: tensor.count) { buffer, initialized in
            BlockQuantization.dequantize(tensor.dtype, tensor.rawPointer, buffer.baseAddress!, count: tensor.count)
            initialized = tensor.count
        }
    }

    // MARK: - Linear algebra

    public func linear(_ out: Tensor, _ x: Tensor, _ weight: Tensor, bias: Tensor?) {
        let rows = x.shape.rows, inputs = x.shape.last, outputs = weight.shape.rows
        precondition(weight.shape.last == inputs && out.shape.rows == rows && out.shape.last == outputs,
                     "linear: x \(x.shape), weight \(weight.shape), out \(out.shape)")
        let y = out.floats.baseAddress!, xs = UnsafePointer(x.floats.baseAddress!)
        if weight.dtype == .f32 {
            blas.sgemm(transposeA: false, transposeB: true, m: rows, n: outputs, k: inputs, alpha: 1,
                       a: xs, lda: inputs, b: weight.floats.baseAddress!, ldb: inputs, beta: 0, c: y, ldc: outputs)
        } else if rows <= 4 {
            linearByDots(y, xs, weight, rows: rows, inputs: inputs, outputs: outputs)
        } else {
            linearByTiles(y, xs, weight, rows: rows, inputs: inputs, outputs: outputs)
        }
        if let bias { addRowVector(out, bias) }
    }

    /// Few rows (decoding): dot products straight from the packed weight, parallel over outputs.
    private func linearByDots(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ weight: Tensor,
                              rows: Int, inputs: Int, outputs: Int) {
        let w = UnsafeRawPointer(weight.rawPointer), rowBytes = weight.dtype.byteCount(elements: inputs)!
        let dtype = weight.dtype
        parallelChunks(outputs, minimumChunk: 64) { range in
            for o in range {
                let wo = w + o * rowBytes
                for r in 0..<rows {
                    y[r * outputs + o] = BlockQuantization.dot(dtype, wo, x + r * inputs, count: inputs)
                }
            }
        }
    }

    /// Many rows: widen a tile of weight rows to f32 in workspace, then one GEMM per tile.
    private func linearByTiles(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ weight: Tensor,
                               rows: Int, inputs: Int, outputs: Int) {
        let tileRows = min(outputs, Self.weightTileRows)
        let tile = zeros([tileRows, inputs], .f32, .workspace)
        let t = tile.floats.baseAddress!
        let rowBytes = weight.dtype.byteCount(elements: inputs)!
        for o0 in stride(from: 0, to: outputs, by: tileRows) {
            let n = min(tileRows, outputs - o0)
            let source = UnsafeRawPointer(weight.rawPointer) + o0 * rowBytes
            let dtype = weight.dtype
            parallelChunks(n, minimumChunk: 16) { range in
                for r in range {
                    BlockQuantization.dequantize(dtype, source + r * rowBytes, t + r * inputs, count: inputs)
                }
            }
            blas.sgemm(transposeA: false, transposeB: true, m: rows, n: n, k: inputs, alpha: 1,
                       a: x, lda: inputs, b: t, ldb: inputs, beta: 0, c: y + o0, ldc: outputs)
        }
    }

    /// `out[r, :] += v` for every row.
    private func addRowVector(_ out: Tensor, _ vector: Tensor) {
        let values = download(vector)
        let y = out.floats.baseAddress!, n = out.shape.last
        values.withUnsafeBufferPointer { v in
            parallelChunks(out.shape.rows, minimumChunk: 8) { range in
                for r in range {
                    let row = y + r * n
                    for j in 0..<n { row[j] += v[j] }
                }
            }
        }
    }

    // MARK: - Embedding and normalization

    public func embedding(_ out: Tensor, _ table: Tensor, tokens: [Int32]) {
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

    public func rmsNorm(_ out: Tensor, _ x: Tensor, _ weight: Tensor, eps: Float, weightOffset: Float) {
        let w = download(weight), n = x.shape.last
        let xs = x.floats.baseAddress!, y = out.floats.baseAddress!
        w.withUnsafeBufferPointer { w in
            parallelChunks(x.shape.rows, minimumChunk: 8) { range in
                for r in range {
                    let row = xs + r * n, dst = y + r * n
                    var sum: Float = 0
                    for j in 0..<n { sum += row[j] * row[j] }
                    let inv = 1 / (sum / Float(n) + eps).squareRoot()
                    for j in 0..<n { dst[j] = row[j] * inv * (w[j] + weightOffset) }
                }
            }
        }
    }

    public func layerNorm(_ out: Tensor, _ x: Tensor, _ weight: Tensor, _ bias: Tensor, eps: Float) {
        let w = download(weight), b = download(bias), n = x.shape.last
        let xs = x.floats.baseAddress!, y = out.floats.baseAddress!
        w.withUnsafeBufferPointer { w in
            b.withUnsafeBufferPointer { b in
                parallelChunks(x.shape.rows, minimumChunk: 8) { range in
                    for r in range {
                        let row = xs + r * n, dst = y + r * n
                        var mean: Float = 0
                        for j in 0..<n { mean += row[j] }
                        mean /= Float(n)
                        var variance: Float = 0
                        for j in 0..<n { let d = row[j] - mean; variance += d * d }
                        let inv = 1 / (variance / Float(n) + eps).squareRoot()
                        for j in 0..<n { dst[j] = (row[j] - mean) * inv * w[j] + b[j] }
                    }
                }
            }
        }
    }

    // MARK: - Attention

    public func rope(_ x: Tensor, heads: Int, headDim: Int, positions: [Int32], inverseFrequencies: [Float]) {
        let tokens = x.shape.rows * x.shape.last / (heads * headDim)
        precondition(tokens == positions.count, "rope: \(tokens) tokens, \(positions.count) positions")
        let half = inverseFrequencies.count, xs = x.floats.baseAddress!
        positions.withUnsafeBufferPointer { positions in
            inverseFrequencies.withUnsafeBufferPointer { frequencies in
                parallelChunks(tokens, minimumChunk: 4) { range in
                    for t in range {
                        let p = Float(positions[t])
                        for i in 0..<half {
                            let angle = p * frequencies[i]
                            let c = Float(cos(Double(angle))), s = Float(sin(Double(angle)))
                            for h in 0..<heads {
                                let v = xs + (t * heads + h) * headDim
                                let a = v[i], b = v[i + half]
                                v[i] = a * c - b * s
                                v[i + half] = b * c + a * s
                            }
                        }
                    }
                }
            }
        }
    }

    public func attention(_ out: Tensor, q: Tensor, k: Tensor, v: Tensor, layout: AttentionLayout) {
        let l = layout, d = l.headDim, group = l.heads / l.kvHeads
        let qs = q.floats.baseAddress!, ks = k.floats.baseAddress!, vs = v.floats.baseAddress!
        let y = out.floats.baseAddress!
        let qStride = l.heads * d, kStride = l.kvHeads * d
        let segments = l.segments
        parallelChunks(l.batch * l.heads, minimumChunk: 1) { range in
            var scores = [Float](repeating: 0, count: l.keyLength)
            for bh in range {
                let b = bh / l.heads, h = bh % l.heads, kh = h / group
                for i in 0..<l.queryLength {
                    let qi = qs + (b * l.queryLength + i) * qStride + h * d
                    let limit = min(l.keyLength, l.queryOffset + i + 1)
                    let ownSegment = segments?[b * l.keyLength + l.queryOffset + i]
                    var maximum = -Float.infinity
                    for j in 0..<limit {
                        if let ownSegment, segments![b * l.keyLength + j] != ownSegment {
                            scores[j] = -.infinity; continue
                        }
                        let kj = ks + (b * l.keyLength + j) * kStride + kh * d
                        var dot: Float = 0
                        for c in 0..<d { dot += qi[c] * kj[c] }
                        scores[j] = dot * l.scale
                        maximum = max(maximum, scores[j])
                    }
                    let yi = y + (b * l.queryLength + i) * qStride + h * d
                    for c in 0..<d { yi[c] = 0 }
                    if maximum == -.infinity { continue }
                    var total: Float = 0
                    for j in 0..<limit {
                        let e = scores[j] == -.infinity ? 0 : Float(exp(Double(scores[j] - maximum)))
                        scores[j] = e
                        total += e
                    }
                    let inv = 1 / total
                    for j in 0..<limit where scores[j] != 0 {
                        let p = scores[j] * inv
                        let vj = vs + (b * l.keyLength + j) * kStride + kh * d
                        for c in 0..<d { yi[c] += p * vj[c] }
                    }
                }
            }
        }
    }

    // MARK: - Elementwise

    public func add(_ out: Tensor, _ a: Tensor, _ b: Tensor) {
        precondition(a.count == b.count && out.count == a.count, "add: \(a.shape) + \(b.shape) -> \(out.shape)")
        let y = out.floats.baseAddress!, xa = a.floats.baseAddress!, xb = b.floats.baseAddress!
        parallelChunks(out.count, minimumChunk: 4096) { range in
            for i in range { y[i] = xa[i] + xb[i] }
        }
    }

    public func scale(_ x: Tensor, by s: Float) {
        let xs = x.floats.baseAddress!
        parallelChunks(x.count, minimumChunk: 4096) { range in
            for i in range { xs[i] *= s }
        }
    }

    public func activate(_ out: Tensor, _ x: Tensor, _ activation: Activation) {
        let y = out.floats.baseAddress!, xs = x.floats.baseAddress!
        parallelChunks(out.count, minimumChunk: 4096) { range in
            for i in range { y[i] = Self.apply(activation, xs[i]) }
        }
    }

    public func gated(_ out: Tensor, gate: Tensor, up: Tensor, _ activation: Activation) {
        let y = out.floats.baseAddress!, g = gate.floats.baseAddress!, u = up.floats.baseAddress!
        parallelChunks(out.count, minimumChunk: 4096) { range in
            for i in range { y[i] = Self.apply(activation, g[i]) * u[i] }
        }
    }

    /// The scalar activation functions, as PyTorch defines them.
    @inline(__always) static func apply(_ activation: Activation, _ x: Float) -> Float {
        switch activation {
        case .silu: return x / (1 + Float(exp(Double(-x))))
        case .relu: return max(x, 0)
        case .geluTanh:
            let inner = 0.7978845608028654 * (Double(x) + 0.044715 * Double(x) * Double(x) * Double(x))
            return Float(0.5 * Double(x) * (1 + tanh(inner)))
        case .gelu: return Float(0.5 * Double(x) * (1 + erf(Double(x) / 2.0.squareRoot())))
        }
    }

    public func copy(_ dst: Tensor, at dstOffset: Int, from src: Tensor) {
        precondition(dstOffset + src.count <= dst.count, "copy: \(src.count) values at \(dstOffset) into \(dst.count)")
        if dst.dtype == src.dtype && !src.dtype.isQuantized {
            let size = src.dtype.blockBytes
            (dst.rawPointer + dstOffset * size).copyMemory(from: src.rawPointer, byteCount: src.byteCount)
            return
        }
        precondition(dst.dtype == .f32, "copy into \(dst.dtype) from \(src.dtype)")
        BlockQuantization.dequantize(src.dtype, src.rawPointer, dst.floats.baseAddress! + dstOffset, count: src.count)
    }
}
