// CUDAOptimizer: the AdamW (f32 or 8-bit moments) and SGD steps, gradient reductions (Σx²,
// finiteness), emulated 16-bit rounding and zero-filling on the GPU (Kernels/adamw.cu,
// adamw8bit.cu, sgd.cu, reduce.cu, cast.cu).
import Foundation
import FrugalCore

extension CUDABackend {
    // MARK: - AdamW, 8-bit AdamW and SGD

    /// An f32 parameter, or one stored in f16 or bf16 itself (pure bf16's weights: read widened,
    /// written rounded to nearest even, Kernels/adamw.cu's `adamw_parameter_*`).
    public func adamW(_ parameter: Tensor, gradient: Tensor, m: Tensor, v: Tensor, step: Int, learningRate: Float,
                      beta1: Float, beta2: Float, epsilon: Float, weightDecay: Float) {
        if parameter.dtype != .f32 {
            precondition((parameter.dtype == .f16 || parameter.dtype == .bf16) && gradient.count == parameter.count
                         && m.count == parameter.count && v.count == parameter.count,
                         "adamW: step \(step), parameter \(parameter.shape) \(parameter.dtype)")
            let adam = AdamWCoefficients(step: step, learningRate: learningRate, beta1: beta1, beta2: beta2, epsilon: epsilon,
                                         weightDecay: weightDecay)
            return must("adamW of \(parameter.shape) \(parameter.dtype)") {
                try launch(CUDAKernels.adamWParameter(parameter.dtype), elements: parameter.count,
                           [parameter.address, m.address, v.address, gradient.address, Int64(parameter.count),
                            beta1, beta2, epsilon, adam.decay, adam.stepSize, adam.correction2])
            }
        }
        adamW(parameter, roundedCopy: nil, gradient: gradient, m: m, v: v, step: step, learningRate: learningRate,
              beta1: beta1, beta2: beta2, epsilon: epsilon, weightDecay: weightDecay)
    }

    /// One AdamW step over f32 master weights that also writes them, rounded, into `roundedCopy`
    /// (the f16/bf16 weights the forward reads), in the same pass.
    public func adamW(_ parameter: Tensor, roundedCopy: Tensor?, gradient: Tensor, m: Tensor, v: Tensor, step: Int,
                      learningRate: Float, beta1: Float, beta2: Float, epsilon: Float, weightDecay: Float) {
        precondition(gradient.count == parameter.count && m.count == parameter.count && v.count == parameter.count
                     && parameter.dtype == .f32 && (roundedCopy == nil || roundedCopy!.count == parameter.count),
                     "adamW: step \(step), parameter \(parameter.shape)")
        let adam = AdamWCoefficients(step: step, learningRate: learningRate, beta1: beta1, beta2: beta2, epsilon: epsilon,
                                     weightDecay: weightDecay)
        must("adamW of \(parameter.shape)") {
            try launch(CUDAKernels.adamW(roundedCopy?.dtype ?? .f32), elements: parameter.count,
                       [parameter.address, m.address, v.address, roundedCopy.address, gradient.address, Int64(parameter.count),
                        beta1, beta2, epsilon, adam.decay, adam.stepSize, adam.correction2])
        }
    }

    /// Thread blocks of 256, eight per multiprocessor at most, stride over the quantization blocks of
    /// 256 values (Kernels/adamw8bit.cu); the two maps travel through the staging slots. The
    /// parameter is f32, or f16/bf16 read widened and written rounded.
    public func adamW8bit(_ parameter: Tensor, gradient: Tensor, m: Tensor, v: Tensor, step: Int, learningRate: Float,
                          beta1: Float, beta2: Float, epsilon: Float, weightDecay: Float) {
        let n = parameter.count, size = DynamicQuantization.blockSize, blocks = (n + size - 1) / size
        precondition(gradient.count == n && [.f32, .f16, .bf16].contains(parameter.dtype) && m.dtype == .dynamic8 && v.dtype == .dynamic8Unsigned
                     && m.count == blocks * size && v.count == blocks * size,
                     "adamW8bit: parameter \(parameter.shape), m \(m.shape) \(m.dtype), v \(v.shape) \(v.dtype)")
        let adam = AdamWCoefficients(step: step, learningRate: learningRate, beta1: beta1, beta2: beta2, epsilon: epsilon,
                                     weightDecay: weightDecay)
        guard blocks > 0 else { return }
        must("adamW8bit of \(parameter.shape)") {
            let maps = try stage(DynamicQuantization.signedMap + DynamicQuantization.unsignedMap)
            try launch(CUDAKernels.adamW8bit(parameter.dtype), grid: (min(blocks, multiprocessors * 8), 1, 1), block: (size, 1, 1),
                       [parameter.address, m.address, v.address, gradient.address, maps.address, Int64(n), beta1, beta2, epsilon,
                        adam.decay, adam.stepSize, adam.correction2])
        }
    }

    /// The parameter is f32, or f16/bf16 read widened and written rounded.
    public func sgd(_ parameter: Tensor, gradient: Tensor, momentumBuffer: Tensor, learningRate: Float, momentum: Float,
                    weightDecay: Float) {
        precondition(gradient.count == parameter.count && momentumBuffer.count == parameter.count
                     && [.f32, .f16, .bf16].contains(parameter.dtype), "sgd: \(parameter.shape) \(parameter.dtype)")
        must("sgd of \(parameter.shape)") {
            try launch(CUDAKernels.sgd(parameter.dtype), elements: parameter.count,
                       [parameter.address, momentumBuffer.address, gradient.address, Int64(parameter.count), learningRate,
                        momentum, weightDecay])
        }
    }

    // MARK: - Reductions

    /// `Σ x²` in double precision: per chunk, then the chunks in order (deterministic).
    public func sumOfSquares(_ x: Tensor) -> Double { sumsOfSquares([x])[0] }

    /// Every tensor's chunks summed by one launch, then each tensor's total by another, then one
    /// download: two launches for the whole list (a LoRA model's gradient norm has hundreds of tensors).
    public func sumsOfSquares(_ tensors: [Tensor]) -> [Double] {
        precondition(tensors.allSatisfy { $0.dtype == .f32 }, "sumsOfSquares of non-f32 tensors")
        guard !tensors.isEmpty else { return [] }
        let table = f32ChunkTable(tensors)
        // Each tensor's first chunk, then the end.
        var offsets: [Int32] = [0]
        for x in tensors { offsets.append(offsets.last! + Int32((x.count + Self.multiTensorChunk - 1) / Self.multiTensorChunk)) }
        let chunks = table.count / 2
        let bytes: [UInt8] = must("sumOfSquares of \(tensors.count) tensors") {
            // (chunks) partial sums, then one total per tensor, as doubles
            let buffer = try allocate([2 * (chunks + tensors.count)], .f32, .workspace)
            if chunks > 0 {
                try launch(CUDAKernels.sumSquaresChunks, grid: (chunks, 1, 1), block: (256, 1, 1), [buffer.address, try stage(table).address])
            }
            try launch(CUDAKernels.sumPartialsRanges, grid: (tensors.count, 1, 1), block: (256, 1, 1),
                       [buffer.address + UInt64(chunks * 8), buffer.address, try stage(offsets).address])
            return downloadBytes(Tensor(storage: buffer.storage, byteOffset: chunks * 8, shape: [2 * tensors.count], dtype: .f32))
        }
        return bytes.withUnsafeBytes { raw in (0..<tensors.count).map { Double(bitPattern: raw.load(fromByteOffset: 8 * $0, as: UInt64.self)) } }
    }

    /// Whether every value is finite.
    public func allFinite(_ x: Tensor) -> Bool {
        precondition(x.dtype == .f32, "allFinite of a \(x.dtype) tensor")
        return must("allFinite of \(x.shape)") {
            let flag = try allocate([1], .f32, .workspace)
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

    // MARK: - Many tensors in one launch

    /// Values per chunk of a multi-tensor launch (and of `sumsOfSquares`' first pass): a thread block each.
    static let multiTensorChunk = 1 << 16

    /// Each tensor's chunks of `multiTensorChunk` values as rows of words: `row(tensor, first,
    /// count)` gives a chunk's words (addresses at its first value, then the count).
    func chunkTable<T>(_ items: [T], count: (T) -> Int, row: (T, Int, Int) -> [UInt64]) -> [UInt64] {
        items.flatMap { item in
            stride(from: 0, to: count(item), by: Self.multiTensorChunk).flatMap { first in
                row(item, first, min(Self.multiTensorChunk, count(item) - first))
            }
        }
    }

    /// f32 tensors' chunks as (first value's address, count) pairs, the table of `sum_squares_chunks`
    /// and `zero_chunks`.
    func f32ChunkTable(_ tensors: [Tensor]) -> [UInt64] {
        chunkTable(tensors, count: \.count) { x, first, count in [x.address + UInt64(first * 4), UInt64(count)] }
    }

    /// Every tensor zeroed by one launch over their chunks.
    public func zero(_ tensors: [Tensor]) {
        precondition(tensors.allSatisfy { $0.dtype == .f32 }, "zero of non-f32 tensors")
        let table = f32ChunkTable(tensors)
        guard !table.isEmpty else { return }
        must("zero of \(tensors.count) tensors") {
            try launch(CUDAKernels.zeroChunks, grid: (table.count / 2, 1, 1), block: (256, 1, 1), [try stage(table).address])
        }
    }

    /// One launch per kind of parameter (f32 masters by their copies' dtype, 16-bit parameters by
    /// theirs) over every chunk of every tensor of that kind, with `adamw_<T>`'s arithmetic.
    public func adamW(_ tensors: [AdamWTensors], step: Int, learningRate: Float, beta1: Float, beta2: Float, epsilon: Float,
                      weightDecay: Float) {
        let adam = AdamWCoefficients(step: step, learningRate: learningRate, beta1: beta1, beta2: beta2, epsilon: epsilon,
                                     weightDecay: weightDecay)
        for t in tensors {
            precondition(t.gradient.count == t.parameter.count && t.m.count == t.parameter.count && t.v.count == t.parameter.count
                         && CUDAKernels.floatTypes.contains(t.parameter.dtype)
                         && (t.roundedCopy == nil || (t.parameter.dtype == .f32 && t.roundedCopy!.count == t.parameter.count)),
                         "adamW: step \(step), parameter \(t.parameter.shape) \(t.parameter.dtype)")
        }
        let kinds = Dictionary(grouping: tensors) { t in
            t.parameter.dtype == .f32 ? CUDAKernels.adamWChunks(shadow: t.roundedCopy?.dtype ?? .f32)
                : CUDAKernels.adamWParameterChunks(t.parameter.dtype)
        }
        must("adamW of \(tensors.count) tensors") {
            for (kernel, group) in kinds.sorted(by: { $0.key.name < $1.key.name }) {
                let table = chunkTable(group, count: \.parameter.count) { t, first, count in
                    let size = UInt64(t.parameter.dtype.blockBytes), offset = UInt64(first * 4)
                    let copy = t.roundedCopy.map { $0.address + UInt64(first * $0.dtype.blockBytes) } ?? 0
                    return [t.parameter.address + UInt64(first) * size, t.m.address + offset, t.v.address + offset, copy,
                            t.gradient.address + offset, UInt64(count)]
                }
                guard !table.isEmpty else { continue }
                try launch(kernel, grid: (table.count / 6, 1, 1), block: (256, 1, 1),
                           [try stage(table).address, beta1, beta2, epsilon, adam.decay, adam.stepSize, adam.correction2])
            }
        }
    }
}
