// CUDALinear: `linear` and its backward on the GPU — cuBLASLt GEMMs in the column-major view of
// row-major tensors. With f32 activations: f32 GEMMs, 16-bit and packed weights widened a tile at
// a time (or, with `lowPrecisionMatmul`, activations rounded to the weight's 16-bit dtype). With
// f16 or bf16 activations: GEMMs in that dtype on the tensor cores (f32 compute), weights of
// another dtype converted to it a tile at a time, as PyTorch's autocast does.
import Foundation
import FrugalCore

extension CUDABackend {
    // MARK: - Linear

    /// `out[r, o] = Σ_i x[r, i]·w[o, i] (+ bias[o])`. Row-major (rows, out) is column-major
    /// (out, rows), so out = op(W)·x with W's storage read transposed. x and out share the
    /// activation dtype, the GEMM's operand dtype (unless `lowPrecisionMatmul` rounds f32 x) and
    /// its output's: a 16-bit out is rounded once, with the bias and the accumulated value.
    public func linear(_ out: Tensor, _ x: Tensor, _ weight: Tensor, bias: Tensor?, accumulate: Bool) {
        let rows = x.shape.rows, inputs = x.shape.last, outputs = weight.shape.rows, type = x.dtype
        precondition(weight.shape.last == inputs && out.shape.rows == rows && out.shape.last == outputs
                     && Self.sameActivations(x, out),
                     "linear: x \(x.shape) \(x.dtype), weight \(weight.shape), out \(out.shape) \(out.dtype)")
        must("linear x \(x.shape) · \(weight.dtype) \(weight.shape)ᵀ") {
            var biasDone = false
            if let lowPrecision = try lowPrecisionOperand(x, weight) {
                // out = W16ᵀ·x16, both on tensor cores, f32 accumulate and output.
                let type = Self.blasType(weight.dtype)
                try gemm(.init(m: outputs, n: rows, k: inputs, transposeA: true, transposeB: false, lda: inputs, ldb: inputs,
                               ldd: outputs, typeA: type, typeB: type, compute: .f32),
                         a: weight.address, b: lowPrecision.address, d: out.address, beta: accumulate ? 1 : 0)
            } else {
                let blas = Self.blasType(type)
                try forEachWeightTile(weight, as: type) { first, count, tile in
                    var shape = CuBLASLt.Shape(m: count, n: rows, k: inputs, transposeA: true, transposeB: false, lda: inputs,
                                               ldb: inputs, ldd: outputs, typeA: blas, typeB: blas, typeD: blas,
                                               compute: compute(type))
                    if let bias, bias.dtype == .f32 || bias.dtype == type, count == outputs {
                        shape.epilogue = .bias
                        shape.biasType = Self.blasType(bias.dtype)
                        if (try? gemm(shape, a: tile, b: x.address, d: out.address, beta: accumulate ? 1 : 0, bias: bias.address)) != nil {
                            biasDone = true
                            return
                        }
                        shape.epilogue = .none
                        shape.biasType = nil
                    }
                    try gemm(shape, a: tile, b: x.address, d: out.address + UInt64(first * type.blockBytes), beta: accumulate ? 1 : 0)
                }
            }
            if let bias, !biasDone {
                precondition(bias.count == outputs && !bias.dtype.isQuantized, "linear: bias \(bias.shape) \(bias.dtype)")
                try launch(CUDAKernels.addRowVector(type, bias.dtype), elements: rows * outputs,
                           [out.address, bias.address, Int64(rows), i32(outputs)])
            }
        }
    }

    /// x's dtype when it is 16-bit and no weight is f32: the GEMMs then run on the tensor cores.
    public func gradientOperandType(activations: DType, weights: [Tensor]) -> DType {
        sixteenBitOperandType(activations: activations, weights: weights)
    }

    /// Gradients of `linear`: `dx = dy·W` (= or +=), `dWeight += dyᵀ·x` (f32, +=), `dBias += Σ_rows dy` (+=).
    /// dy and the gradients are f32, x is in the activation dtype. With 16-bit x, dy is rounded to
    /// x's dtype once (workspace) and both GEMMs run in it on the tensor cores, accumulating in f32
    /// into the f32 gradients — PyTorch's autocast (widening x to f32 instead would cost an f32
    /// copy of x and f32 GEMMs); dx with an f32 weight stays an f32 GEMM of f32 operands.
    public func linearBackward(dx: Tensor?, dWeight: Tensor?, dBias: Tensor?, dy: Tensor, x: Tensor, weight: Tensor,
                               accumulate: Bool) {
        precondition(x.shape.rows == dy.shape.rows && x.shape.last == weight.shape.last && Self.sameActivations(x),
                     "linearBackward: x \(x.shape) \(x.dtype), weight \(weight.shape), dy \(dy.shape)")
        linearGradients(dx: dx, dWeight: dWeight.map { ($0, x) }, dBias: dBias, dy: dy, weight: weight, activations: x.dtype,
                        accumulate: accumulate)
    }

    public func inputGradient(dx: Tensor, dy: Tensor, weight: Tensor, activations: DType, accumulate: Bool) {
        precondition(CUDAKernels.floatTypes.contains(activations), "inputGradient: activations \(activations)")
        linearGradients(dx: dx, dWeight: nil, dBias: nil, dy: dy, weight: weight, activations: activations, accumulate: accumulate)
    }

    /// `linearBackward`'s work, the input `x` needed only for `dWeight`.
    private func linearGradients(dx: Tensor?, dWeight: (gradient: Tensor, x: Tensor)?, dBias: Tensor?, dy: Tensor, weight: Tensor,
                                 activations: DType, accumulate: Bool) {
        let rows = dy.shape.rows, inputs = weight.shape.last, outputs = weight.shape.rows
        precondition(dy.shape.last == outputs && (dy.dtype == .f32 || (dy.dtype == activations && dBias == nil && weight.dtype != .f32)),
                     "linearBackward: weight \(weight.shape), dy \(dy.shape) \(dy.dtype), activations \(activations)")
        must("linearBackward \(activations) rows \(rows), weight \(weight.dtype) \(weight.shape)") {
            // dy rounded to the 16-bit activations' dtype, made on first use (f32 dy as it is).
            var roundedDy: Tensor?
            func dyOperand(_ type: DType) throws -> Tensor {
                if type == dy.dtype { return dy }
                if let roundedDy { return roundedDy }
                let rounded = try roundedCopy(dy, to: type)
                roundedDy = rounded
                return rounded
            }
            if let dx {
                precondition(dx.count == rows * inputs && dx.dtype == .f32, "linearBackward: dx \(dx.shape) for \(rows) × \(inputs)")
                let type = weight.dtype == .f32 ? .f32 : activations
                if type == .f32, let lowPrecision = try lowPrecisionOperand(dy, weight) {
                    let blas = Self.blasType(weight.dtype)
                    try gemm(.init(m: inputs, n: rows, k: outputs, transposeA: false, transposeB: false, lda: inputs,
                                   ldb: outputs, ldd: inputs, typeA: blas, typeB: blas, compute: .f32),
                             a: weight.address, b: lowPrecision.address, d: dx.address, beta: accumulate ? 1 : 0)
                } else {
                    // dx (in × rows) = Σ_tiles tile (in × count) · dy[:, tile] (count × rows)
                    let operand = try dyOperand(type), blas = Self.blasType(type)
                    try forEachWeightTile(weight, as: type) { first, count, tile in
                        try gemm(.init(m: inputs, n: rows, k: count, transposeA: false, transposeB: false, lda: inputs,
                                       ldb: outputs, ldd: inputs, typeA: blas, typeB: blas, compute: compute(type)),
                                 a: tile, b: operand.address + UInt64(first * type.blockBytes), d: dx.address,
                                 beta: first == 0 && !accumulate ? 0 : 1)
                    }
                }
            }
            if let (dWeight, x) = dWeight {
                precondition(dWeight.dtype == .f32 && dWeight.count == outputs * inputs,
                             "linearBackward: dWeight \(dWeight.shape) \(dWeight.dtype) for weight \(weight.shape)")
                // dWᵀ (in × out) += x (in × rows) · dyᵀ (rows × out)
                let blas = Self.blasType(activations)
                try gemm(.init(m: inputs, n: outputs, k: rows, transposeA: false, transposeB: true, lda: inputs, ldb: outputs,
                               ldd: inputs, typeA: blas, typeB: blas, compute: compute(activations)),
                         a: x.address, b: try dyOperand(activations).address, d: dWeight.address, beta: 1)
            }
            if let dBias {
                precondition(dBias.count == outputs && dBias.dtype == .f32, "linearBackward: dBias \(dBias.shape) for \(outputs) outputs")
                try reduceColumns(CUDAKernels.columnSum, rows: rows, columns: outputs, into: [dBias.address], [dy.address])
            }
        }
    }

    // MARK: - Helpers

    /// The compute type of f32 GEMMs.
    var f32Compute: CuBLASLt.ComputeType { options.allowTF32 ? .f32FastTF32 : .f32 }

    /// The compute type of GEMMs whose operands are `type`: f32 (TF32 when allowed) for f32, f32
    /// accumulation on the tensor cores for 16-bit.
    func compute(_ type: DType) -> CuBLASLt.ComputeType { type == .f32 ? f32Compute : .f32 }

    static func blasType(_ dtype: DType) -> CuBLASLt.DataType {
        switch dtype {
        case .f16: .f16
        case .bf16: .bf16
        default: .f32
        }
    }

    /// With `lowPrecisionMatmul`, f32 activations and a 16-bit weight: `activations` rounded to
    /// the weight's dtype (workspace); else nil.
    func lowPrecisionOperand(_ activations: Tensor, _ weight: Tensor) throws -> Tensor? {
        guard options.lowPrecisionMatmul, activations.dtype == .f32, weight.dtype == .f16 || weight.dtype == .bf16 else { return nil }
        return try roundedCopy(activations, to: weight.dtype)
    }

    /// An f32 tensor rounded once to `type` (f16 or bf16) in a new workspace tensor: a GEMM operand.
    func roundedCopy(_ x: Tensor, to type: DType) throws -> Tensor {
        let rounded = try allocate(x.shape, type, .workspace)
        try convert(x, into: rounded.address, as: type, count: x.count)
        return rounded
    }

    /// `D = α·op(A)·op(B) + β·D` through cuBLASLt on the backend's stream.
    func gemm(_ shape: CuBLASLt.Shape, a: DevicePointer, b: DevicePointer, d: DevicePointer, alpha: Float = 1, beta: Float,
              bias: DevicePointer? = nil) throws {
        guard shape.m > 0, shape.n > 0 else { return }
        try blas.matmul(shape, a: a, b: b, d: d, alpha: alpha, beta: beta, bias: bias, workspace: blasWorkspace.address,
                        workspaceBytes: blasWorkspace.byteCount, stream: stream)
    }

    /// Calls `body(firstRow, rowCount, rows)` over `weight` (outputs, inputs) a tile of rows at a
    /// time, the rows as contiguous `type` (f32, f16 or bf16) at a device address: a weight of
    /// that dtype is one tile read in place; others are converted (widened, rounded or decoded)
    /// `tileBytes` at a time into one workspace tile.
    func forEachWeightTile(_ weight: Tensor, as type: DType = .f32, _ body: (Int, Int, DevicePointer) throws -> Void) throws {
        let outputs = weight.shape.rows, inputs = weight.shape.last
        if weight.dtype == type { return try body(0, outputs, weight.address) }
        let tileRows = max(1, min(outputs, options.tileBytes / type.blockBytes / max(inputs, 1)))
        let tile = try allocate([tileRows, inputs], type, .workspace)
        let rowBytes = weight.dtype.byteCount(elements: inputs)!
        try withExtendedLifetime(tile) {
            for first in stride(from: 0, to: outputs, by: tileRows) {
                let count = min(tileRows, outputs - first)
                let rows = Tensor(storage: weight.storage, byteOffset: weight.byteOffset + first * rowBytes,
                                  shape: [count, inputs], dtype: weight.dtype)
                try convert(rows, into: tile.address, as: type, count: count * inputs)
                try body(first, count, tile.address)
            }
        }
    }
}
