// CUDANorms: RMSNorm and LayerNorm over the last dimension and their backwards on the GPU
// (Kernels/rmsnorm.cu, Kernels/layernorm.cu; the kernels also fuse the residual add). x, the
// residual, the sum and out are in the activation dtype (f32, f16 or bf16), rounded once per
// output; with a 16-bit residual add the norm is taken of the sum as stored (rounded).
import Foundation
import FrugalCore

extension CUDABackend {
    // MARK: - RMSNorm

    /// RMSNorm fused with the residual add: `h = x + residual` (written to `sum` when given),
    /// `out = h/rms(h)·(w + weightOffset)`, one kernel. `sum` may alias `x`.
    public func rmsNorm(_ out: Tensor, sum: Tensor?, _ x: Tensor, residual: Tensor?, _ weight: Tensor, eps: Float,
                        weightOffset: Float) {
        let n = x.shape.last, rows = x.shape.rows
        precondition(out.count == x.count && weight.count == n && Self.sameActivations(x, out, sum, residual),
                     "rmsNorm: x \(x.shape) \(x.dtype), out \(out.shape) \(out.dtype), weight \(weight.shape)")
        must("rmsNorm of \(x.shape)") {
            try launch(CUDAKernels.rmsNormForward(x.dtype, weight.dtype), rows: rows,
                       [out.address, sum.address, UInt64(0), x.address, residual.address, weight.address,
                        i32(rows), i32(n), eps, weightOffset])
        }
    }

    /// Gradients of `rmsNorm`: `dWeight` (+=) first, then `dx` (=, may alias dy).
    public func rmsNormBackward(dx: Tensor, dWeight: Tensor?, dy: Tensor, x: Tensor, weight: Tensor, eps: Float,
                                weightOffset: Float) {
        let n = x.shape.last, rows = x.shape.rows
        precondition(dx.count == x.count && dy.count == x.count && weight.count == n && dx.dtype == .f32 && dy.dtype == .f32
                     && Self.sameActivations(x),
                     "rmsNormBackward: x \(x.shape) \(x.dtype), dx \(dx.shape), dy \(dy.shape), weight \(weight.shape)")
        must("rmsNormBackward of \(x.shape)") {
            // (rows) the saved statistic: 1/rms per row
            let rstd = try allocate([rows], .f32, .workspace)
            try launch(CUDAKernels.rmsNormRstd(x.dtype), rows: rows, [rstd.address, x.address, i32(rows), i32(n), eps])
            if let dWeight {
                precondition(dWeight.dtype == .f32 && dWeight.count == n, "rmsNormBackward: dWeight \(dWeight.shape)")
                try reduceColumns(CUDAKernels.rmsNormBackwardWeight(x.dtype), rows: rows, columns: n, into: [dWeight.address],
                                  [dy.address, x.address, rstd.address])
            }
            try launch(CUDAKernels.rmsNormBackwardInput(x.dtype, weight.dtype), rows: rows,
                       [dx.address, dy.address, x.address, weight.address, rstd.address, i32(rows), i32(n), weightOffset])
        }
    }

    // MARK: - LayerNorm

    /// LayerNorm fused with the residual add: `h = x + residual` (written to `sum` when given),
    /// `out = (h − μ)/σ·w + b`, one kernel. `sum` may alias `x`.
    public func layerNorm(_ out: Tensor, sum: Tensor?, _ x: Tensor, residual: Tensor?, _ weight: Tensor, _ bias: Tensor,
                          eps: Float) {
        let n = x.shape.last, rows = x.shape.rows
        precondition(out.count == x.count && weight.count == n && Self.sameActivations(x, out, sum, residual)
                     && bias.dtype == weight.dtype && bias.count == n,
                     "layerNorm: x \(x.shape) \(x.dtype), out \(out.shape) \(out.dtype), weight \(weight.shape) \(weight.dtype), "
                        + "bias \(bias.shape) \(bias.dtype)")
        must("layerNorm of \(x.shape)") {
            try launch(CUDAKernels.layerNormForward(x.dtype, weight.dtype), rows: rows,
                       [out.address, sum.address, UInt64(0), UInt64(0), x.address, residual.address, weight.address,
                        bias.address, i32(rows), i32(n), eps])
        }
    }

    /// Gradients of `layerNorm`: `dWeight` and `dBias` (+=) first, then `dx` (=, may alias dy).
    public func layerNormBackward(dx: Tensor, dWeight: Tensor?, dBias: Tensor?, dy: Tensor, x: Tensor, weight: Tensor, eps: Float) {
        let n = x.shape.last, rows = x.shape.rows
        precondition(dx.count == x.count && dy.count == x.count && weight.count == n && dx.dtype == .f32 && dy.dtype == .f32
                     && Self.sameActivations(x),
                     "layerNormBackward: x \(x.shape) \(x.dtype), dx \(dx.shape), dy \(dy.shape), weight \(weight.shape)")
        must("layerNormBackward of \(x.shape)") {
            // (2, rows) the saved statistics: mean and 1/std per row
            let statistics = try allocate([2, rows], .f32, .workspace)
            let mean = statistics.address, rstd = statistics.address + UInt64(rows * 4)
            try launch(CUDAKernels.layerNormStatistics(x.dtype), rows: rows, [mean, rstd, x.address, i32(rows), i32(n), eps])
            if dWeight != nil || dBias != nil {
                if let dWeight { precondition(dWeight.dtype == .f32 && dWeight.count == n, "layerNormBackward: dWeight") }
                if let dBias { precondition(dBias.dtype == .f32 && dBias.count == n, "layerNormBackward: dBias") }
                try reduceColumns(CUDAKernels.layerNormBackwardParameters(x.dtype), rows: rows, columns: n,
                                  into: [dWeight?.address, dBias?.address], [dy.address, x.address, mean, rstd])
            }
            try launch(CUDAKernels.layerNormBackwardInput(x.dtype, weight.dtype), rows: rows,
                       [dx.address, dy.address, x.address, weight.address, mean, rstd, i32(rows), i32(n)])
        }
    }
}
