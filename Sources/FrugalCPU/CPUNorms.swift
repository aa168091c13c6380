// CPUNorms: RMSNorm and LayerNorm over the last dimension, and their backwards, on the CPU.
import Foundation
import FrugalCore

extension CPUBackend {
    // MARK: - RMSNorm

    public func rmsNorm(_ out: Tensor, sum: Tensor?, _ x: Tensor, residual: Tensor?, _ weight: Tensor, eps: Float,
                        weightOffset: Float) {
        profile.measure("rmsNorm") {
            let n = x.shape.last
            withFloats(weight) { w in
                forEachRow(out, sum: sum, x, residual: residual) { h, dst in
                    let inv = Self.inverseRMS(h, n, eps: eps)
                    for j in 0..<n { dst[j] = h[j] * inv * (w[j] + weightOffset) }
                }
            }
        }
    }

    /// Calls `body(h, out)` for every row, in parallel: `h` is the row of `x`, or of `x + residual`
    /// (written to `sum`'s row, or to a scratch row when `sum` is nil); `out` is the row of `out`.
    /// With 16-bit tensors, `h` and `out` are f32 scratch rows: `x` and `residual` widened, `h`
    /// rounded to their dtype (as `sum` stores it) before the norm, `out` rounded into `out`.
    private func forEachRow(_ out: Tensor, sum: Tensor?, _ x: Tensor, residual: Tensor?,
                            _ body: (UnsafePointer<Float>, UnsafeMutablePointer<Float>) -> Void) {
        let n = x.shape.last
        precondition(out.count == x.count && (residual?.count ?? x.count) == x.count && (sum?.count ?? x.count) == x.count,
                     "norm: x \(x.shape), out \(out.shape), residual \(residual?.shape.description ?? "none"), sum \(sum?.shape.description ?? "none")")
        precondition(out.dtype == x.dtype && (residual?.dtype ?? x.dtype) == x.dtype && (sum?.dtype ?? x.dtype) == x.dtype,
                     "norm: x \(x.dtype), out \(out.dtype), residual \(residual?.dtype.rawValue ?? "none"), sum \(sum?.dtype.rawValue ?? "none")")
        if x.dtype != .f32 {
            Self.checkActivation(x, "norm")
            let dtype = x.dtype, rowBytes = 2 * n
            let xs = UnsafeRawPointer(x.rawPointer), y = out.rawPointer
            let rs = residual.map { UnsafeRawPointer($0.rawPointer) }, sums = sum?.rawPointer
            parallelChunks(x.shape.rows, minimumChunk: Self.rowsPerChunk(n)) { range in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * n) { scratch in
                    let h = scratch.baseAddress!, o = h + n
                    for r in range {
                        BlockQuantization.dequantize(dtype, xs + r * rowBytes, h, count: n)
                        if let rs {
                            // The sum as stored: what backward differentiates.
                            BlockQuantization.dequantize(dtype, rs + r * rowBytes, o, count: n)
                            for j in 0..<n { h[j] = HalfPrecision.round(h[j] + o[j], to: dtype) }
                        }
                        if let sums { Self.narrow(h, sums + r * rowBytes, dtype, count: n) }
                        body(h, o)
                        Self.narrow(o, y + r * rowBytes, dtype, count: n)
                    }
                }
            }
            return
        }
        let xs = x.floats.baseAddress!, y = out.floats.baseAddress!
        let rs = residual?.floats.baseAddress, sums = sum?.floats.baseAddress
        parallelChunks(x.shape.rows, minimumChunk: Self.rowsPerChunk(n)) { range in
            guard let rs else {
                for r in range { body(xs + r * n, y + r * n) }
                return
            }
            withUnsafeTemporaryAllocation(of: Float.self, capacity: sums == nil ? n : 0) { scratch in
                for r in range {
                    let h = sums.map { $0 + r * n } ?? scratch.baseAddress!
                    for j in 0..<n { h[j] = xs[r * n + j] + rs[r * n + j] }
                    body(h, y + r * n)
                }
            }
        }
    }

    /// Gradients of `rmsNorm`: `dx` (=, may alias dy) and `dWeight` (+=); a 16-bit `x` is widened
    /// into workspace first.
    ///
    /// With `s = 1/rms(x)` and `w' = w + weightOffset`:
    /// `dx_j = s·dy_j·w'_j − s³/n · x_j · Σ_k dy_k·w'_k·x_k`, `dWeight_j += Σ_rows dy_j·x_j·s`.
    public func rmsNormBackward(dx: Tensor, dWeight: Tensor?, dy: Tensor, x: Tensor, weight: Tensor, eps: Float,
                                weightOffset: Float) {
        profile.measure("rmsNormBackward") {
            let n = x.shape.last, rows = x.shape.rows
            precondition(dx.count == x.count && dy.count == x.count && weight.count == n,
                         "rmsNormBackward: x \(x.shape), dx \(dx.shape), dy \(dy.shape), weight \(weight.shape)")
            let wide = widened(x)
            defer { withExtendedLifetime(wide) {} }
            let xs = wide.floats.baseAddress!, g = dy.floats.baseAddress!, d = dx.floats.baseAddress!
            // (rows) the saved statistic: 1/rms per row
            var inverses = [Float](repeating: 0, count: rows)
            inverses.withUnsafeMutableBufferPointer { inverses in
                parallelChunks(rows, minimumChunk: Self.rowsPerChunk(n)) { range in
                    for r in range { inverses[r] = Self.inverseRMS(xs + r * n, n, eps: eps) }
                }
                if let dWeight {
                    precondition(dWeight.dtype == .f32 && dWeight.count == n, "rmsNormBackward: dWeight \(dWeight.shape)")
                    let dw = dWeight.floats.baseAddress!
                    parallelChunks(n, minimumChunk: 64) { columns in
                        for r in 0..<rows {
                            let row = xs + r * n, gr = g + r * n, s = inverses[r]
                            for j in columns { dw[j] += gr[j] * row[j] * s }
                        }
                    }
                }
                withFloats(weight) { w in
                    parallelChunks(rows, minimumChunk: Self.rowsPerChunk(n)) { range in
                        withUnsafeTemporaryAllocation(of: Float.self, capacity: n) { scaled in
                            let gw = scaled.baseAddress!
                            for r in range {
                                let row = xs + r * n, gr = g + r * n, dst = d + r * n, s = inverses[r]
                                for j in 0..<n { gw[j] = gr[j] * (w[j] + weightOffset) }
                                let c = s * s * s * VectorMath.dot(gw, row, n) / Float(n)
                                for j in 0..<n { dst[j] = s * gw[j] - c * row[j] }
                            }
                        }
                    }
                }
            }
        }
    }

    /// `1/√(mean(row²) + eps)` of one row of `n` values.
    @inline(__always) static func inverseRMS(_ row: UnsafePointer<Float>, _ n: Int, eps: Float) -> Float {
        1 / (VectorMath.sumOfSquares(row, n) / Float(n) + eps).squareRoot()
    }

    /// Rows of width `n` worth a thread of their own (about 16K values).
    @inline(__always) static func rowsPerChunk(_ n: Int) -> Int { max(1, 16_384 / max(1, n)) }

    // MARK: - LayerNorm

    public func layerNorm(_ out: Tensor, sum: Tensor?, _ x: Tensor, residual: Tensor?, _ weight: Tensor, _ bias: Tensor,
                          eps: Float) {
        profile.measure("layerNorm") {
            let n = x.shape.last
            withFloats(weight) { w in
                withFloats(bias) { b in
                    forEachRow(out, sum: sum, x, residual: residual) { h, dst in
                        let (mean, inv) = Self.meanAndInverseDeviation(h, n, eps: eps)
                        for j in 0..<n { dst[j] = (h[j] - mean) * inv * w[j] + b[j] }
                    }
                }
            }
        }
    }

    /// Gradients of `layerNorm`: `dx` (=, may alias dy), `dWeight` and `dBias` (+=); a 16-bit `x`
    /// is widened into workspace first.
    ///
    /// With `x̂ = (x − μ)·s` and `g = dy·w`: `dx = s·(g − mean(g) − x̂·mean(g·x̂))`,
    /// `dWeight += Σ_rows dy·x̂`, `dBias += Σ_rows dy`.
    public func layerNormBackward(dx: Tensor, dWeight: Tensor?, dBias: Tensor?, dy: Tensor, x: Tensor, weight: Tensor,
                                  eps: Float) {
        profile.measure("layerNormBackward") {
            let n = x.shape.last, rows = x.shape.rows
            precondition(dx.count == x.count && dy.count == x.count && weight.count == n,
                         "layerNormBackward: x \(x.shape), dx \(dx.shape), dy \(dy.shape), weight \(weight.shape)")
            let wide = widened(x)
            defer { withExtendedLifetime(wide) {} }
            let xs = wide.floats.baseAddress!, g = dy.floats.baseAddress!, d = dx.floats.baseAddress!
            // (rows) the saved statistics: mean and 1/std per row
            var means = [Float](repeating: 0, count: rows), inverses = [Float](repeating: 0, count: rows)
            means.withUnsafeMutableBufferPointer { means in
                inverses.withUnsafeMutableBufferPointer { inverses in
                    parallelChunks(rows, minimumChunk: Self.rowsPerChunk(n)) { range in
                        for r in range { (means[r], inverses[r]) = Self.meanAndInverseDeviation(xs + r * n, n, eps: eps) }
                    }
                    if dWeight != nil || dBias != nil {
                        if let dWeight { precondition(dWeight.dtype == .f32 && dWeight.count == n, "layerNormBackward: dWeight") }
                        if let dBias { precondition(dBias.dtype == .f32 && dBias.count == n, "layerNormBackward: dBias") }
                        let dw = dWeight?.floats.baseAddress, db = dBias?.floats.baseAddress
                        parallelChunks(n, minimumChunk: 64) { columns in
                            for r in 0..<rows {
                                let row = xs + r * n, gr = g + r * n, mean = means[r], s = inverses[r]
                                if let dw { for j in columns { dw[j] += gr[j] * (row[j] - mean) * s } }
                                if let db { for j in columns { db[j] += gr[j] } }
                            }
                        }
                    }
                    withFloats(weight) { w in
                        parallelChunks(rows, minimumChunk: Self.rowsPerChunk(n)) { range in
                            for r in range {
                                let row = xs + r * n, gr = g + r * n, dst = d + r * n, mean = means[r], s = inverses[r]
                                var meanG: Float = 0, meanGX: Float = 0
                                for j in 0..<n {
                                    let gj = gr[j] * w[j]
                                    meanG += gj
                                    meanGX += gj * (row[j] - mean) * s
                                }
                                meanG /= Float(n); meanGX /= Float(n)
                                for j in 0..<n {
                                    let xhat = (row[j] - mean) * s
                                    dst[j] = s * (gr[j] * w[j] - meanG - xhat * meanGX)
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The mean of one row of `n` values and `1/√(variance + eps)` (biased variance, as PyTorch).
    @inline(__always) static func meanAndInverseDeviation(_ row: UnsafePointer<Float>, _ n: Int,
                                                          eps: Float) -> (mean: Float, inverse: Float) {
        let mean = VectorMath.sum(row, n) / Float(n)
        var variance: Float = 0
        for j in 0..<n { let d = row[j] - mean; variance += d * d }
        return (mean, 1 / (variance / Float(n) + eps).squareRoot())
    }
}
