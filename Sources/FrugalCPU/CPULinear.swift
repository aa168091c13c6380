// CPULinear: `linear` and its backward on the CPU — BLAS GEMMs over weight tiles widened to f32.
import Foundation
import FrugalCore

extension CPUBackend {
    // MARK: - Linear

    public func linear(_ out: Tensor, _ x: Tensor, _ weight: Tensor, bias: Tensor?) {
        let rows = x.shape.rows, inputs = x.shape.last, outputs = weight.shape.rows
        precondition(weight.shape.last == inputs && out.shape.rows == rows && out.shape.last == outputs,
                     "linear: x \(x.shape), weight \(weight.shape), out \(out.shape)")
        let y = out.floats.baseAddress!, xs = UnsafePointer(x.floats.baseAddress!)
        if weight.dtype != .f32 && rows <= 4 {
            linearByDots(y, xs, weight, rows: rows, inputs: inputs, outputs: outputs)
        } else {
            // y[:, tile] = x · tileᵀ
            forEachWeightTile(weight) { first, count, w in
                blas.sgemm(transposeA: false, transposeB: true, m: rows, n: count, k: inputs, alpha: 1,
                           a: xs, lda: inputs, b: w, ldb: inputs, beta: 0, c: y + first, ldc: outputs)
            }
        }
        if let bias { addRowVector(out, bias) }
    }

    /// Gradients of `linear`: `dx = dy·W` (=), `dWeight += dyᵀ·x` (+=), `dBias += Σ_rows dy` (+=).
    ///
    /// `dx` takes one GEMM per weight tile (packed and 16-bit weights are widened as the
    /// forward widens them); `dWeight` is one GEMM with beta 1.
    public func linearBackward(dx: Tensor?, dWeight: Tensor?, dBias: Tensor?, dy: Tensor, x: Tensor, weight: Tensor) {
        let rows = x.shape.rows, inputs = x.shape.last, outputs = weight.shape.rows
        precondition(weight.shape.last == inputs && dy.shape.rows == rows && dy.shape.last == outputs,
                     "linearBackward: x \(x.shape), weight \(weight.shape), dy \(dy.shape)")
        let g = UnsafePointer(dy.floats.baseAddress!)
        if let dx {
            precondition(dx.count == rows * inputs, "linearBackward: dx \(dx.shape) for x \(x.shape)")
            let d = dx.floats.baseAddress!
            // dx (=, then += per further tile) dy[:, tile] · tile
            forEachWeightTile(weight) { first, count, w in
                blas.sgemm(transposeA: false, transposeB: false, m: rows, n: inputs, k: count, alpha: 1,
                           a: g + first, lda: outputs, b: w, ldb: inputs, beta: first == 0 ? 0 : 1, c: d, ldc: inputs)
            }
        }
        if let dWeight {
            precondition(dWeight.dtype == .f32 && dWeight.count == outputs * inputs,
                         "linearBackward: dWeight \(dWeight.shape) \(dWeight.dtype) for weight \(weight.shape)")
            blas.sgemm(transposeA: true, transposeB: false, m: outputs, n: inputs, k: rows, alpha: 1,
                       a: g, lda: outputs, b: x.floats.baseAddress!, ldb: inputs, beta: 1,
                       c: dWeight.floats.baseAddress!, ldc: inputs)
        }
        if let dBias {
            precondition(dBias.count == outputs, "linearBackward: dBias \(dBias.shape) for \(outputs) outputs")
            let db = dBias.floats.baseAddress!
            parallelChunks(outputs, minimumChunk: 64) { columns in
                for r in 0..<rows {
                    let row = g + r * outputs
                    for o in columns { db[o] += row[o] }
                }
            }
        }
    }

    // MARK: - Tiling helpers

    /// Calls `body(firstRow, rowCount, rows)` over `weight` (outputs, inputs) a tile of rows at a
    /// time, the tile's rows as contiguous f32: an f32 weight is one tile read in place; any
    /// other dtype is widened `weightTileRows` rows at a time into one workspace tile.
    func forEachWeightTile(_ weight: Tensor, _ body: (Int, Int, UnsafePointer<Float>) -> Void) {
        let outputs = weight.shape.rows, inputs = weight.shape.last
        if weight.dtype == .f32 {
            body(0, outputs, weight.floats.baseAddress!)
            return
        }
        let tileRows = min(outputs, Self.weightTileRows)
        let tile = zeros([tileRows, inputs], .f32, .workspace)
        let t = tile.floats.baseAddress!
        let rowBytes = weight.dtype.byteCount(elements: inputs)!, dtype = weight.dtype
        withExtendedLifetime(tile) {
            for o0 in stride(from: 0, to: outputs, by: tileRows) {
                let n = min(tileRows, outputs - o0)
                let source = UnsafeRawPointer(weight.rawPointer) + o0 * rowBytes
                parallelChunks(n, minimumChunk: 16) { range in
                    for r in range {
                        BlockQuantization.dequantize(dtype, source + r * rowBytes, t + r * inputs, count: inputs)
                    }
                }
                body(o0, n, t)
            }
        }
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
}
