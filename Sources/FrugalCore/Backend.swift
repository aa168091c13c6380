// Backend: the ops a model needs, implemented once per device (CPU reference, CUDA).

/// The activation that follows a projection, or joins a gated pair.
public enum Activation: String, Sendable, Codable {
    case silu, relu
    /// GELU with the tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    case geluTanh
    /// Exact GELU with erf.
    case gelu

    /// Whether the derivative can be read from the output as well as from the input: relu's is 1
    /// where relu(x) > 0, which is where x > 0 (also after rounding both to 16 bits, rounding
    /// being monotone), so its backward needs only the output kept.
    public var derivativeFromOutput: Bool { self == .relu }
}

/// The attention pattern for one call.
public struct AttentionLayout: Sendable {
    /// Number of sequences in the batch.
    public var batch: Int
    /// Query positions per sequence.
    public var queryLength: Int
    /// Key positions per sequence (cached + new).
    public var keyLength: Int
    /// Position of the first query among the keys (`keyLength - queryLength` with a cache).
    public var queryOffset: Int
    public var heads: Int
    public var kvHeads: Int
    public var headDim: Int
    /// Softmax scale, usually 1/sqrt(headDim).
    public var scale: Float
    /// Optional segment id per key position and sequence (`batch × keyLength`): a query
    /// attends only to keys of its own segment. Packing uses it; padding uses segment -1.
    public var segments: [Int32]?

    public init(batch: Int, queryLength: Int, keyLength: Int, queryOffset: Int, heads: Int, kvHeads: Int,
                headDim: Int, scale: Float, segments: [Int32]? = nil) {
        self.batch = batch; self.queryLength = queryLength; self.keyLength = keyLength
        self.queryOffset = queryOffset; self.heads = heads; self.kvHeads = kvHeads
        self.headDim = headDim; self.scale = scale; self.segments = segments
    }
}

extension AttentionLayout {
    /// Queries per block where a backend computes the causal scores a block of queries at a time,
    /// each block against only the keys it can see (the GPU's GEMM path; `MemoryPlan` sizes its
    /// workspace with it): about 128, in at most 8 blocks.
    public static func queryBlockSize(_ queryLength: Int) -> Int {
        let blocks = min(8, max(1, queryLength / 128))
        return (queryLength + blocks - 1) / blocks
    }

    /// Head dimensions the GPU's tensor-core attention kernels take (f16 and bf16 activations;
    /// `MemoryPlan` counts no packed heads or scores for them).
    public static let tensorCoreHeadDims: Set<Int> = [64, 96, 128]
}

/// A compute device: allocation with memory categories, and the forward ops of the models.
///
/// Weights may be f32, f16, bf16 or packed quantized blocks. Forward activations (an op's inputs
/// and outputs that are not weights, statistics or gradients) are stored in f32, f16 or bf16 —
/// the *activation dtype*, one per call unless an op says otherwise — while statistics (the
/// attention's log-sum-exp) stay f32. Arithmetic is f32 whatever the storage: a 16-bit output is
/// rounded once (to nearest even) from the f32 result, and an op that accumulates (+=) into a
/// 16-bit output reads it, adds in f32 and rounds.
/// Output tensors are preallocated by the caller. Ops are grouped by `// MARK:` sections.
public protocol Backend: AnyObject, Sendable {
    /// Which device this is.
    var device: DeviceKind { get }
    /// Bytes allocated, current and peak, by category.
    var ledger: MemoryLedger { get }
    /// Host memory held for this device's work (offloaded activations, an offloaded optimizer's
    /// state), by category: apart from `ledger`, which counts the device's own memory.
    var hostLedger: MemoryLedger { get }

    // MARK: - Memory

    /// A new zero-filled tensor.
    func zeros(_ shape: Shape, _ dtype: DType, _ category: MemoryCategory) -> Tensor
    /// A new tensor whose contents are unspecified, for an output an op overwrites entirely (=).
    func empty(_ shape: Shape, _ dtype: DType, _ category: MemoryCategory) -> Tensor
    /// A new tensor holding `bytes` (raw, already in `dtype`'s layout).
    func upload(_ bytes: UnsafeRawBufferPointer, _ shape: Shape, _ dtype: DType, _ category: MemoryCategory) -> Tensor
    /// The tensor's values as floats (dequantized when packed).
    func download(_ tensor: Tensor) -> [Float]
    /// A timer of a step's phases in this device's order of work (the host clock by default).
    func makePhaseTimer() -> PhaseTimer
    /// Whether `attentionBackward` reads the forward's output and log-sum-exp (so a training
    /// forward keeps them); a backend that recomputes them answers false.
    var usesAttentionStatistics: Bool { get }
    /// The tensor's raw bytes, in `dtype`'s layout (what `upload` takes).
    func downloadBytes(_ tensor: Tensor) -> [UInt8]
    /// Moves `tensor`'s bytes to host memory counted in `hostLedger` (on a GPU: pinned, copied
    /// asynchronously after the queued work), so the caller can drop the device tensor.
    ///
    /// With `dropping`, the caller promises to drop the tensor without writing it again (a
    /// checkpointed block input): a GPU then copies on its copy engine alongside the work queued
    /// later, and holds the tensor's memory until the copy is done. Without, later work may write
    /// the tensor at once (it runs after the copy).
    func offload(_ tensor: Tensor, dropping: Bool) -> HostCopy
    /// A new device tensor, in the category the copy was made from, holding `copy`'s bytes
    /// (on a GPU: copied asynchronously after the queued work).
    func restore(_ copy: HostCopy) -> Tensor
    /// Starts bringing `copy` back ahead of its `restore`, which then returns that tensor: on a GPU
    /// the copy engine moves it alongside the work queued in between. The tensor counts in the
    /// ledger from this call.
    func prefetch(_ copy: HostCopy)
    /// Copies `copy`'s bytes into `tensor` (same dtype and count; on a GPU asynchronously, after the
    /// queued work). The host may drop the copy at once, but must not write its bytes again before
    /// a fence queued after this call has passed.
    func upload(_ copy: HostCopy, into tensor: Tensor)
    /// A fence after the work queued so far: the host waits on it for an `offload`'s bytes, or
    /// for an `upload` to have read its host copy, without waiting for work queued later.
    func fence() -> DeviceFence

    // MARK: - Linear algebra

    /// `out[r, o] = Σ_i x[r, i] · w[o, i] (+ bias[o])`: x (rows, in) and out share the activation
    /// dtype, w is (out, in) of any dtype; with `accumulate`, `out +=` instead (a LoRA branch added
    /// into the base's output).
    func linear(_ out: Tensor, _ x: Tensor, _ weight: Tensor, bias: Tensor?, accumulate: Bool)

    // MARK: - Embedding and normalization

    /// `out[t] = table[tokens[t]]` (table of any dtype, out f32; a decoder converts to its
    /// activation dtype with `copy`).
    func embedding(_ out: Tensor, _ table: Tensor, tokens: [Int32])
    /// RMSNorm over the last dimension, fused with the residual add: `h = x (+ residual)`,
    /// `out = h / rms(h) · (w + weightOffset)`; `h` is written to `sum` when given (`sum` may
    /// alias `x`, `out` may alias `x` when there is no `sum`). out, sum, x and residual share the
    /// activation dtype; the weight is of any float dtype. In 16 bits, `h` is rounded to the
    /// activation dtype before it is normalized (with or without `sum`): the norm is of the sum
    /// as stored, which is what backward differentiates.
    func rmsNorm(_ out: Tensor, sum: Tensor?, _ x: Tensor, residual: Tensor?, _ weight: Tensor, eps: Float, weightOffset: Float)
    /// LayerNorm over the last dimension with weight and bias, fused with the residual add as
    /// `rmsNorm` is: `out = (h − μ)/σ · w + b`.
    func layerNorm(_ out: Tensor, sum: Tensor?, _ x: Tensor, residual: Tensor?, _ weight: Tensor, _ bias: Tensor, eps: Float)

    // MARK: - Attention

    /// Rotary embedding in place on `x` (tokens, heads, headDim), rotate-half layout; the
    /// first `2·inverseFrequencies.count` dims of each head rotate.
    func rope(_ x: Tensor, heads: Int, headDim: Int, positions: [Int32], inverseFrequencies: [Float])
    /// Causal scaled-dot-product attention with grouped-query heads.
    /// q: (batch·queryLength, heads·headDim); k, v: (batch·keyLength, kvHeads·headDim);
    /// out: (batch·queryLength, heads·headDim), all four in the activation dtype. A backend may
    /// also write each query row's log-sum-exp into `logSumExp` ((batch·heads·queryLength) f32)
    /// for its backward to reuse.
    func attention(_ out: Tensor, q: Tensor, k: Tensor, v: Tensor, layout: AttentionLayout, logSumExp: Tensor?)

    // MARK: - Elementwise (every tensor of one call in one dtype: f32, f16 or bf16)

    /// `out = a + b` (same shape; out may alias a).
    func add(_ out: Tensor, _ a: Tensor, _ b: Tensor)
    /// `x *= s` in place.
    func scale(_ x: Tensor, by s: Float)
    /// `out = a · b` elementwise (out may alias either).
    func multiply(_ out: Tensor, _ a: Tensor, _ b: Tensor)
    /// `out = act(x)` elementwise (out may alias x).
    func activate(_ out: Tensor, _ x: Tensor, _ activation: Activation)
    /// `out = act(gate) · up` elementwise (out may alias gate).
    func gated(_ out: Tensor, gate: Tensor, up: Tensor, _ activation: Activation)
    /// Copies `src` into `dst` at element offset `dstOffset`, converting dtype when needed: into
    /// f32 from any dtype, into f16 or bf16 from f32 (rounded to nearest even), or into the same
    /// dtype (a packed one at a block boundary). Either may be
    /// a host tensor (storage on the CPU, as a host `CPUBackend` allocates it) when the dtypes
    /// match: the bytes then cross between host and device, and the host may read or reuse them
    /// when `copy` returns.
    func copy(_ dst: Tensor, at dstOffset: Int, from src: Tensor)
}

extension Backend {
    /// `offload` of a tensor that later work may write.
    public func offload(_ tensor: Tensor) -> HostCopy { offload(tensor, dropping: false) }

    /// `attention` without statistics for a backward.
    public func attention(_ out: Tensor, q: Tensor, k: Tensor, v: Tensor, layout: AttentionLayout) {
        attention(out, q: q, k: k, v: v, layout: layout, logSumExp: nil)
    }

    /// `out = x·Wᵀ (+ bias)` (=).
    public func linear(_ out: Tensor, _ x: Tensor, _ weight: Tensor, bias: Tensor?) {
        linear(out, x, weight, bias: bias, accumulate: false)
    }

    public func makePhaseTimer() -> PhaseTimer { HostPhaseTimer() }

    /// `tensor` stored as `dtype` in a new tensor of `category` (rounded to nearest even into f16 or
    /// bf16, widened into f32), or `tensor` itself when it already is.
    public func converted(_ tensor: Tensor, to dtype: DType, _ category: MemoryCategory = .activations) -> Tensor {
        guard tensor.dtype != dtype else { return tensor }
        let out = empty(tensor.shape, dtype, category)
        copy(out, at: 0, from: tensor)
        return out
    }

    /// RMSNorm of `x` alone.
    public func rmsNorm(_ out: Tensor, _ x: Tensor, _ weight: Tensor, eps: Float, weightOffset: Float) {
        rmsNorm(out, sum: nil, x, residual: nil, weight, eps: eps, weightOffset: weightOffset)
    }

    /// LayerNorm of `x` alone.
    public func layerNorm(_ out: Tensor, _ x: Tensor, _ weight: Tensor, _ bias: Tensor, eps: Float) {
        layerNorm(out, sum: nil, x, residual: nil, weight, bias, eps: eps)
    }
}
