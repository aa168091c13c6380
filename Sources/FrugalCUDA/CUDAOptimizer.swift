// CUDAOptimizer: the AdamW and SGD steps, gradient reductions (Σx², finiteness), emulated 16-bit
// rounding and zero-filling on the GPU (Kernels/adamw.cu, sgd.cu, reduce.cu, cast.cu).
import Foundation
import FrugalCore

extension CUDABackend {
    /// Elements per block of `sumOfSquares`'s first pass.
    static let reductionChunk = 1 << 16

    // MARK: - AdamW and SGD

    public func adamW(_ parameter: Tensor, gradient: Tensor, m: Tensor, v: Tensor, step: Int, learningRate: Float,
                      beta1: Float, beta2: Float, epsilon: Float, weightDecay: Float) {
        adamW(parameter, roundedCopy: nil, gradient: gradient, m: m, v: v, step: step, learningRate: learningRate,
              beta1: beta1, beta2: beta2, epsilon: epsilon, weightDecay: weightDecay)
    }

    /// One AdamW step over f32 master weights that also writes them, rounded, into `roundedCopy`
    /// (the f16/bf16 weights the forward reads), in the same pass.
    public func adamW(_ parameter: Tensor, roundedCopy: Tensor?, gradient: Tensor, m: Tensor, v: Tensor, step: Int,
                      learningRate: Float, beta1: Float, beta2: Float, epsilon: Float, weightDecay: Float) {
        precondition(step >= 1 && gradient.count == parameter.count && m.count == parameter.count && v.count == parameter.count
                     && parameter.dtype == .f32 && (roundedCopy == nil || roundedCopy!.count == parameter.count),
                     "adamW: step \(step), parameter \(parameter.shape)")
        let stepSize = Float(Double(learningRate) / (1 - pow(Double(beta1), Double(step))))
        let correction2 = Float((1 - pow(Double(beta2), Double(step))).squareRoot())
        must("adamW of \(parameter.shape)") {
            try launch(CUDAKernels.adamW(roundedCopy?.dtype ?? .f32), elements: parameter.count,
                       [parameter.address, m.address, v.address, roundedCopy.address, gradient.address, Int64(parameter.count),
                        beta1, beta2, epsilon, 1 - learningRate * weightDecay, stepSize, correction2])
        }
    }

    public func sgd(_ parameter: Tensor, gradient: Tensor, momentumBuffer: Tensor, learningRate: Float, momentum: Float,
                    weightDecay: Float) {
        precondition(gradient.count == parameter.count && momentumBuffer.count == parameter.count, "sgd: \(parameter.shape)")
        must("sgd of \(parameter.shape)") {
            try launch(CUDAKernels.sgd, elements: parameter.count,
                       [parameter.address, momentumBuffer.address, gradient.address, Int64(parameter.count), learningRate,
                        momentum, weightDecay])
        }
    }

    // MARK: - Reductions

    /// `Σ x²` in double precision: per chunk, then the chunks in order (deterministic).
    public func sumOfSquares(_ x: Tensor) -> Double {
        precondition(x.dtype == .f32, "sumOfSquares of a \(x.dtype) tensor")
        guard x.count > 0 else { return 0 }
        let chunks = (x.count + Self.reductionChunk - 1) / Self.reductionChunk
        let bits: UInt64 = must("sumOfSquares of \(x.shape)") {
            // (chunks) partial sums and (1) the total, as doubles
            let partials = try empty([2 * chunks + 2], .f32, .workspace)
            let total = partials.address + UInt64(chunks * 8)
            try launch(CUDAKernels.sumSquaresPartial, grid: (chunks, 1, 1), block: (256, 1, 1),
                       [partials.address, x.address, Int64(x.count), Int64(Self.reductionChunk)])
            try launch(CUDAKernels.sumPartials, grid: (1, 1, 1), block: (256, 1, 1), [total, partials.address, i32(chunks)])
            let view = Tensor(storage: partials.storage, byteOffset: chunks * 8, shape: [2], dtype: .f32)
            return downloadBytes(view).withUnsafeBytes { $0.load(as: UInt64.self) }
        }
        return Double(bitPattern: bits)
    }

    /// Whether every value is finite.
    public func allFinite(_ x: Tensor) -> Bool {
        precondition(x.dtype == .f32, "allFinite of a \(x.dtype) tensor")
        return must("allFinite of \(x.shape)") {
            let flag = try empty([1], .f32, .workspace)
            try driver.memsetAsync(flag.address, words: 1, count: 1, stream: stream)
            try launch(CUDAKernels.allFinite, elements: x.count, [flag.address, x.address, Int64(x.count)])
            return downloadBytes(flag).withUnsafeBytes { $0.load(as: Int32.self) } == 1
        }
    }

    // MARK: - Precision and filling

    public func roundInPlace(_ x: Tensor, to dtype: DType) {
        precondition(dtype == .f32 || dtype == .f16 || dtype == .bf16, "roundInPlace to \(dtype)")
        precondition(x.dtype == .f32, "roundInPlace of a \(x.dtype) tensor")
        if dtype == .f32 { return }
        must("roundInPlace") { try launch(CUDAKernels.round(dtype), elements: x.count, [x.address, Int64(x.count)]) }
    }

    public func zero(_ x: Tensor) {
        precondition(x.dtype == .f32, "zero of a \(x.dtype) tensor")
        must("zero") { try driver.memsetAsync(x.address, 0, bytes: x.byteCount, stream: stream) }
    }
}
