// CPULinear: `linear` and its backward on the CPU — BLAS GEMMs over weight tiles widened to f32,
// and fused dot products straight from packed weights for a few rows (decoding).
import Foundation
import FrugalCore

extension CPUBackend {
    /// Rows of `x` up to which a packed weight is read by dot products rather than widened into
    /// tiles for a GEMM (decoding reads each weight once per token either way).
    static let dotRows = 4

    // MARK: - Linear

    public func linear(_ out: Tensor, _ x: Tensor, _ weight: Tensor, bias: Tensor?, accumulate: Bool) {
        let rows = x.shape.rows, inputs = x.shape.last, outputs = weight.shape.rows
        precondition(weight.shape.last == inputs && out.shape.rows == rows && out.shape.last == outputs,
                     "linear: x \(x.shape), weight \(weight.shape), out \(out.shape)")
        if Self.isTrainable16(weight) {  // pure bf16: the f32 weight's product exactly
            return linear(out, x, widened(weight), bias: bias, accumulate: accumulate)
        }
        if x.dtype != .f32 || out.dtype != .f32 {  // 16-bit activations: the f32 product, rounded into out
            precondition(x.dtype == out.dtype, "linear: x \(x.dtype), out \(out.dtype)")
            let wide = widened(x)
            return withFloatOutput(out, reading: accumulate) { linear($0, wide, weight, bias: bias, accumulate: accumulate) }
        }
        if accumulate && weight.dtype != .f32 {  // packed weights write (=): add a product made aside
            let product = empty(out.shape, .f32, .workspace)
            linear(product, x, weight, bias: bias, accumulate: false)
            return add(out, out, product)
        }
        let path = weight.dtype == .f32 ? "linear (f32)" : rows <= Self.dotRows ? "linear (packed, dots)" : "linear (packed, tiles)"
        profile.measure(path) {
            let y = out.floats.baseAddress!, xs = UnsafePointer(x.floats.baseAddress!)
            if weight.dtype == .f32 {
                blas.sgemm(transposeA: false, transposeB: true, m: rows, n: outputs, k: inputs, alpha: 1,
                           a: xs, lda: inputs, b: weight.floats.baseAddress!, ldb: inputs, beta: accumulate ? 1 : 0, c: y,
                           ldc: outputs)
            } else if rows <= Self.dotRows {
                linearByDots(y, xs, weight, rows: rows, inputs: inputs, outputs: outputs)
            } else {
                linearByTiles(y, xs, weight, rows: rows, inputs: inputs, outputs: outputs)
            }
            if let bias { addRowVector(out, bias) }
        }
    }

    /// `sixteenBitOperandType` under `roundsGradientOperands`, else f32.
    public func gradientOperandType(activations: DType, weights: [Tensor]) -> DType {
        roundsGradientOperands ? sixteenBitOperandType(activations: activations, weights: weights) : .f32
    }

    /// Gradients of `linear`: `dx = dy·W` (= or +=), `dWeight += dyᵀ·x` (+=), `dBias += Σ_rows dy` (+=).
    ///
    /// `dx` takes one GEMM per weight tile (packed and 16-bit weights are widened as the
    /// forward widens them); `dWeight` is one GEMM with beta 1, over `x` widened to f32 when it
    /// is 16-bit. A 16-bit dy (`gradientOperandType` under `roundsGradientOperands`), or an f32 one
    /// rounded as a GPU's 16-bit GEMMs would read it, reaches the GEMMs widened; `dBias` sums f32 rows.
    public func linearBackward(dx: Tensor?, dWeight: Tensor?, dBias: Tensor?, dy: Tensor, x: Tensor, weight: Tensor,
                               accumulate: Bool) {
        precondition(x.shape.rows == dy.shape.rows && x.shape.last == weight.shape.last,
                     "linearBackward: x \(x.shape), weight \(weight.shape), dy \(dy.shape)")
        linearGradients(dx: dx, dWeight: dWeight.map { ($0, x) }, dBias: dBias, dy: dy, weight: weight, activations: x.dtype,
                        accumulate: accumulate)
    }

    public func inputGradient(dx: Tensor, dy: Tensor, weight: Tensor, activations: DType, accumulate: Bool) {
        linearGradients(dx: dx, dWeight: nil, dBias: nil, dy: dy, weight: weight, activations: activations, accumulate: accumulate)
    }

    /// `linearBackward`'s work, the input `x` needed only for `dWeight`.
    private func linearGradients(dx: Tensor?, dWeight: (gradient: Tensor, x: Tensor)?, dBias: Tensor?, dy: Tensor, weight: Tensor,
                                 activations: DType, accumulate: Bool) {
        precondition(dy.dtype == .f32 || dBias == nil, "linearBackward: a bias gradient sums an f32 dy, not \(dy.dtype)")
        let operand = widened(gradientOperand(dy, activations: activations, weights: [weight]))
        // Pure bf16: the f32 weight's gradients exactly.
        let weight = Self.isTrainable16(weight) ? widened(weight) : weight
        profile.measure("linearBackward") {
            let rows = dy.shape.rows, inputs = weight.shape.last, outputs = weight.shape.rows
            precondition(dy.shape.last == outputs, "linearBackward: weight \(weight.shape), dy \(dy.shape)")
            let g = UnsafePointer(operand.floats.baseAddress!)
            if let dx {
                precondition(dx.count == rows * inputs, "linearBackward: dx \(dx.shape) for \(rows) × \(inputs)")
                let d = dx.floats.baseAddress!
                // dx (=, then += per further tile) dy[:, tile] · tile
                forEachWeightTile(weight) { first, count, w in
                    blas.sgemm(transposeA: false, transposeB: false, m: rows, n: inputs, k: count, alpha: 1,
                               a: g + first, lda: outputs, b: w, ldb: inputs, beta: first == 0 && !accumulate ? 0 : 1, c: d,
                               ldc: inputs)
                }
            }
            if let (dWeight, x) = dWeight {
                precondition(dWeight.dtype == .f32 && dWeight.count == outputs * inputs,
                             "linearBackward: dWeight \(dWeight.shape) \(dWeight.dtype) for weight \(weight.shape)")
                withExtendedLifetime(widened(x)) { xs in
                    blas.sgemm(transposeA: true, transposeB: false, m: outputs, n: inputs, k: rows, alpha: 1,
                               a: g, lda: outputs, b: xs.floats.baseAddress!, ldb: inputs, beta: 1,
                               c: dWeight.floats.baseAddress!, ldc: inputs)
                }
            }
            if let dBias {
                precondition(dBias.count == outputs, "linearBackward: dBias \(dBias.shape) for \(outputs) outputs")
                let db = dBias.floats.baseAddress!, f32Rows = UnsafePointer(dy.floats.baseAddress!)
                parallelChunks(outputs, minimumChunk: 64) { columns in
                    for r in 0..<rows {
                        let row = f32Rows + r * outputs
                        for o in columns { db[o] += row[o] }
                    }
                }
            }
        }
    }

    // MARK: - Tiling helpers

    /// Whether `weight` is a trainable weight stored in 16 bits (pure bf16), which `linear` and
    /// `linearBackward` widen whole into an f32 workspace tensor: the GEMMs then run exactly as on
    /// an f32 weight holding the same values (the tiled paths of a frozen 16-bit weight cut the
    /// sums differently), so storing the weight in 16 bits changes no result.
    static func isTrainable16(_ weight: Tensor) -> Bool {
        (weight.dtype == .bf16 || weight.dtype == .f16) && weight.storage.category == .trainable
    }

    /// Calls `body(firstRow, rowCount, rows)` over `weight` (outputs, inputs) a tile of rows at a
    /// time, the tile's rows as contiguous f32: an f32 weight is one tile read in place; any
    /// other dtype is widened `weightTileRows` rows at a time (by all workers) into one
    /// workspace tile, and `body` runs on the calling thread.
    func forEachWeightTile(_ weight: Tensor, _ body: (Int, Int, UnsafePointer<Float>) -> Void) {
        let outputs = weight.shape.rows, inputs = weight.shape.last
        if weight.dtype == .f32 {
            body(0, outputs, weight.floats.baseAddress!)
            return
        }
        let tileRows = min(outputs, Self.weightTileRows)
        let tile = empty([tileRows, inputs], .f32, .workspace)
        let t = tile.floats.baseAddress!
        let rowBytes = weight.dtype.byteCount(elements: inputs)!, dtype = weight.dtype
        withExtendedLifetime(tile) {
            for o0 in stride(from: 0, to: outputs, by: tileRows) {
                let n = min(tileRows, outputs - o0)
                let source = UnsafeRawPointer(weight.rawPointer) + o0 * rowBytes
                parallelChunks(n, minimumChunk: max(1, 16_384 / inputs)) { range in
                    for r in range {
                        BlockQuantization.dequantize(dtype, source + r * rowBytes, t + r * inputs, count: inputs)
                    }
                }
                body(o0, n, t)
            }
        }
    }

    /// `y = x·Wᵀ` for a packed or 16-bit weight and many rows: the output columns are cut into
    /// tiles, and each worker widens its tiles into its own workspace and multiplies them
    /// (one serial GEMM per tile), so widening and multiplying overlap across workers.
    private func linearByTiles(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ weight: Tensor,
                               rows: Int, inputs: Int, outputs: Int) {
        let workers = min(workerCount, max(1, outputs / 16))
        // Tiles of at most weightTileRows rows, a multiple of the worker count so they share evenly.
        let perWorker = (outputs + workers * Self.weightTileRows - 1) / (workers * Self.weightTileRows)
        let tiles = workers * perWorker
        let tileRows = min(outputs, ((outputs + tiles - 1) / tiles + 15) / 16 * 16)
        let tileCount = (outputs + tileRows - 1) / tileRows
        let scratch = empty([workers, tileRows * inputs], .f32, .workspace)
        let base = scratch.floats.baseAddress!
        let source = UnsafeRawPointer(weight.rawPointer), rowBytes = weight.dtype.byteCount(elements: inputs)!
        let dtype = weight.dtype
        withExtendedLifetime(scratch) {
            parallelItems(tileCount, workers: workers) { tile, worker in
                let first = tile * tileRows, n = min(tileRows, outputs - first)
                let t = base + worker * tileRows * inputs
                for r in 0..<n {
                    BlockQuantization.dequantize(dtype, source + (first + r) * rowBytes, t + r * inputs, count: inputs)
                }
                blas.sgemmSerial(transposeA: false, transposeB: true, m: rows, n: n, k: inputs, alpha: 1,
                                 a: x, lda: inputs, b: t, ldb: inputs, beta: 0, c: y + first, ldc: outputs)
            }
        }
    }

    /// Few rows (decoding): dot products straight from the packed weight, parallel over outputs.
    /// q8_0 and q4 weights use the fused kernels on each row of `x` laid out once
    /// (`BlockQuantization.prepareDot`); other dtypes widen each weight row once on the stack.
    private func linearByDots(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ weight: Tensor,
                              rows: Int, inputs: Int, outputs: Int) {
        let w = UnsafeRawPointer(weight.rawPointer), rowBytes = weight.dtype.byteCount(elements: inputs)!
        let dtype = weight.dtype
        // Outputs per thread: about 128K weights (tens of microseconds), so that a small
        // projection does not wait for a second thread to wake.
        let minimumChunk = max(16, 131_072 / inputs)
        if BlockQuantization.hasPreparedDot(dtype) {
            let stride = BlockQuantization.preparedCount(dtype, count: inputs)
            withUnsafeTemporaryAllocation(of: Float.self, capacity: rows * stride) { buffer in
                let prepared = buffer.baseAddress!
                for r in 0..<rows {
                    BlockQuantization.prepareDot(dtype, x + r * inputs, count: inputs, into: prepared + r * stride)
                }
                parallelChunks(outputs, minimumChunk: minimumChunk) { range in
                    for o in range {
                        for r in 0..<rows {
                            y[r * outputs + o] = BlockQuantization.dotPrepared(dtype, w + o * rowBytes, prepared + r * stride,
                                                                               count: inputs)
                        }
                    }
                }
            }
            return
        }
        parallelChunks(outputs, minimumChunk: minimumChunk) { range in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: inputs) { buffer in
                let widened = buffer.baseAddress!
                for o in range {
                    BlockQuantization.dequantize(dtype, w + o * rowBytes, widened, count: inputs)
                    for r in 0..<rows { y[r * outputs + o] = VectorMath.dot(widened, x + r * inputs, inputs) }
                }
            }
        }
    }

    /// `out[r, :] += v` for every row.
    private func addRowVector(_ out: Tensor, _ vector: Tensor) {
        withFloats(vector) { v in
            let y = out.floats.baseAddress!, n = out.shape.last
            parallelChunks(out.shape.rows, minimumChunk: max(1, 16_384 / n)) { range in
                for r in range {
                    let row = y + r * n
                    for j in 0..<n { row[j] += v[j] }
                }
            }
        }
    }

    /// Calls `body` with the tensor's values as floats: in place for f32, else widened into a
    /// temporary buffer (norm weights, biases).
    func withFloats<R>(_ tensor: Tensor, _ body: (UnsafePointer<Float>) -> R) -> R {
        if tensor.dtype == .f32 { return body(tensor.floats.baseAddress!) }
        return withUnsafeTemporaryAllocation(of: Float.self, capacity: tensor.count) { buffer in
            BlockQuantization.dequantize(tensor.dtype, tensor.rawPointer, buffer.baseAddress!, count: tensor.count)
            return body(buffer.baseAddress!)
        }
    }
}
