// TrainingBackend: the backward ops, loss and optimizer a backend needs to train.

/// A backend that can train: gradients of every forward op, the fused loss, and the optimizer.
///
/// Gradients (every `d…` tensor) are f32; the forward activations a backward reads (`x`, `q`,
/// `gate`, `out`…) are in the activation dtype the forward stored them in (f32, f16 or bf16; see
/// `Backend`). Each op says whether it overwrites (`=`) or accumulates (`+=`) into each output,
/// as llm.c does.
public protocol TrainingBackend: Backend {
    // MARK: - Backward (f32 gradients; `=` overwrites, `+=` accumulates, as each says)

    /// Gradients of `linear`: `dx = dy·W` (=, or += with `accumulate`), `dWeight += dyᵀ·x` (f32, +=),
    /// `dBias += Σ_rows dy` (+=). Any of the outputs may be nil when not needed (a frozen weight has
    /// no `dWeight`). dy is f32, or in `gradientOperandType` (then without `dBias`).
    func linearBackward(dx: Tensor?, dWeight: Tensor?, dBias: Tensor?, dy: Tensor, x: Tensor, weight: Tensor, accumulate: Bool)
    /// `linearBackward`'s `dx = dy·W` (=, or += with `accumulate`) alone, for a frozen weight whose
    /// input was not kept: `activations` is that input's dtype, which the GEMM's operands follow as
    /// they would there.
    func inputGradient(dx: Tensor, dy: Tensor, weight: Tensor, activations: DType, accumulate: Bool)
    /// The dtype the GEMMs of `linearBackward` read a gradient in, for an input in `activations`
    /// and each of `weights`: on a GPU, with 16-bit activations and no f32 weight, theirs; otherwise f32. A gradient
    /// that only such GEMMs read may be written in it directly (`activateBackward`, `gatedBackward`),
    /// sparing its f32 copy and the pass that rounds it.
    func gradientOperandType(activations: DType, weights: [Tensor]) -> DType
    /// `dTable[tokens[t]] += dy[t]` (f32 table gradient).
    func embeddingBackward(_ dTable: Tensor, dy: Tensor, tokens: [Int32])
    /// Gradients of `rmsNorm`: `dx` (=) and `dWeight` (+=).
    func rmsNormBackward(dx: Tensor, dWeight: Tensor?, dy: Tensor, x: Tensor, weight: Tensor, eps: Float, weightOffset: Float)
    /// Gradients of `layerNorm`: `dx` (=), `dWeight` and `dBias` (+=).
    func layerNormBackward(dx: Tensor, dWeight: Tensor?, dBias: Tensor?, dy: Tensor, x: Tensor, weight: Tensor, eps: Float)
    /// Gradient of `rope` in place on `dx` (the inverse rotation).
    func ropeBackward(_ dx: Tensor, heads: Int, headDim: Int, positions: [Int32], inverseFrequencies: [Float])
    /// Gradients of `attention` (=): recomputes the softmax from q and k, never stores it. `out`
    /// and `logSumExp` are the forward's output and statistics when kept (a backend that wrote
    /// the statistics then need not run the forward again).
    func attentionBackward(dq: Tensor, dk: Tensor, dv: Tensor, dOut: Tensor, q: Tensor, k: Tensor, v: Tensor,
                           layout: AttentionLayout, out: Tensor?, logSumExp: Tensor?)
    /// `dx = dy · act'(x)` (=): dx f32 (it may alias dy) or in x's 16-bit dtype, when
    /// `gradientOperandType` allows it.
    func activateBackward(dx: Tensor, dy: Tensor, x: Tensor, _ activation: Activation)
    /// Gradients of `gated` (=): `dGate = dy·up·act'(gate)`, `dUp = dy·act(gate)`, both f32 (dGate
    /// may alias dy) or both in gate's 16-bit dtype, when `gradientOperandType` allows it.
    func gatedBackward(dGate: Tensor, dUp: Tensor, dy: Tensor, gate: Tensor, up: Tensor, _ activation: Activation)

    // MARK: - Loss

    /// Cross-entropy of `hidden·headᵀ` against `targets`, computed over chunks of rows so the
    /// full (rows, vocab) logits never exist. Targets < 0 are ignored.
    /// Writes `dHidden` (=) and accumulates `dHead` (+=) for the loss multiplied by `gradientScale`.
    /// - Returns: the sum of the per-token losses over non-ignored targets (unscaled).
    func crossEntropy(hidden: Tensor, head: Tensor, targets: [Int32], dHidden: Tensor?, dHead: Tensor?,
                      gradientScale: Float) -> Double

    // MARK: - Optimizer and precision

    /// One AdamW step over a parameter tensor with its gradient and moments (f32):
    /// `m = β1·m + (1-β1)·g; v = β2·v + (1-β2)·g²; p -= lr·(m̂/(√v̂+ε) + wd·p)`, bias-corrected by `step` (1-based).
    /// The parameter is f32, or f16/bf16 stored so itself (pure bf16's weights): read widened,
    /// updated in f32 exactly as an f32 parameter, written back rounded to nearest even.
    func adamW(_ parameter: Tensor, gradient: Tensor, m: Tensor, v: Tensor, step: Int, learningRate: Float,
               beta1: Float, beta2: Float, epsilon: Float, weightDecay: Float)
    /// `adamW` over several parameters at once (a GPU launches once for all of them); a
    /// parameter's `roundedCopy`, when given, receives the f32 parameter's new values rounded
    /// to nearest even in the copy's dtype (a master's 16-bit compute copy), as `copy` rounds.
    func adamW(_ tensors: [AdamWTensors], step: Int, learningRate: Float, beta1: Float, beta2: Float, epsilon: Float,
               weightDecay: Float)
    /// One AdamW step with 8-bit moments (bitsandbytes' blockwise 8-bit AdamW): per block of 256
    /// values, decodes m (`dynamic8`) and v (`dynamic8Unsigned`), applies `adamW`'s arithmetic to
    /// the parameter (f32, or f16/bf16 read widened and written rounded to nearest even, as in
    /// `adamW`), and encodes the new moments with the block's new absmax. m and v hold
    /// `parameter.count` values rounded up to whole blocks (the padding stays zero).
    func adamW8bit(_ parameter: Tensor, gradient: Tensor, m: Tensor, v: Tensor, step: Int, learningRate: Float,
                   beta1: Float, beta2: Float, epsilon: Float, weightDecay: Float)
    /// One SGD step with momentum (PyTorch's rule): `g += wd·p; b = μ·b + g; p -= lr·b`. The
    /// momentum buffer is f32; the parameter f32, or f16/bf16 read widened and written rounded
    /// to nearest even (as in `adamW`).
    func sgd(_ parameter: Tensor, gradient: Tensor, momentumBuffer: Tensor, learningRate: Float, momentum: Float,
             weightDecay: Float)
    /// `Σ x²` of an f32 tensor, in double precision.
    func sumOfSquares(_ x: Tensor) -> Double
    /// `Σ x²` of each tensor, with one wait for the device (a NaN or ∞ anywhere makes its sum non-finite).
    func sumsOfSquares(_ tensors: [Tensor]) -> [Double]
    /// Whether every value of an f32 tensor is finite.
    func allFinite(_ x: Tensor) -> Bool
    /// Rounds every f32 value in place to the nearest value of `dtype` (emulated f16/bf16 storage).
    func roundInPlace(_ x: Tensor, to dtype: DType)
    /// Fills an f32 tensor with zeros.
    func zero(_ x: Tensor)
    /// Fills each f32 tensor with zeros (a GPU launches once for all of them).
    func zero(_ tensors: [Tensor])
}

/// One parameter of a multi-tensor AdamW step (`TrainingBackend.adamW(_:step:…)`).
public struct AdamWTensors {
    public let parameter: Tensor
    /// The 16-bit compute copy of an f32 master, rewritten from it in the same pass.
    public let roundedCopy: Tensor?
    public let gradient: Tensor
    public let m: Tensor
    public let v: Tensor

    public init(parameter: Tensor, roundedCopy: Tensor?, gradient: Tensor, m: Tensor, v: Tensor) {
        self.parameter = parameter; self.roundedCopy = roundedCopy; self.gradient = gradient; self.m = m; self.v = v
    }
}

extension TrainingBackend {
    /// `attentionBackward` that recomputes the forward.
    public func attentionBackward(dq: Tensor, dk: Tensor, dv: Tensor, dOut: Tensor, q: Tensor, k: Tensor, v: Tensor,
                                  layout: AttentionLayout) {
        attentionBackward(dq: dq, dk: dk, dv: dv, dOut: dOut, q: q, k: k, v: v, layout: layout, out: nil, logSumExp: nil)
    }

    /// `linearBackward` with `dx` overwritten (=).
    public func linearBackward(dx: Tensor?, dWeight: Tensor?, dBias: Tensor?, dy: Tensor, x: Tensor, weight: Tensor) {
        linearBackward(dx: dx, dWeight: dWeight, dBias: dBias, dy: dy, x: x, weight: weight, accumulate: false)
    }

    /// One `sumOfSquares` after another (a backend that computes in place waits for nothing).
    public func sumsOfSquares(_ tensors: [Tensor]) -> [Double] { tensors.map(sumOfSquares) }

    /// `dy` in `gradientOperandType`, made once for several calls that share it (a projection and
    /// its LoRA branch): an f32 dy rounded into workspace (each call would round it), otherwise dy itself.
    public func gradientOperand(_ dy: Tensor, activations: DType, weights: [Tensor]) -> Tensor {
        let type = gradientOperandType(activations: activations, weights: weights)
        return dy.dtype == .f32 && type != .f32 ? converted(dy, to: type, .workspace) : dy
    }

    /// The operand dtype of GEMMs that run in 16 bits (a GPU's tensor cores): x's dtype when it
    /// is f16 or bf16 and none of `weights` is f32, else f32.
    public func sixteenBitOperandType(activations: DType, weights: [Tensor]) -> DType {
        (activations == .f16 || activations == .bf16) && !weights.contains(where: { $0.dtype == .f32 }) ? activations : .f32
    }

    /// One `adamW` after another, each followed by its rounded copy.
    public func adamW(_ tensors: [AdamWTensors], step: Int, learningRate: Float, beta1: Float, beta2: Float, epsilon: Float,
                      weightDecay: Float) {
        for t in tensors {
            adamW(t.parameter, gradient: t.gradient, m: t.m, v: t.v, step: step, learningRate: learningRate, beta1: beta1,
                  beta2: beta2, epsilon: epsilon, weightDecay: weightDecay)
            if let copy = t.roundedCopy { self.copy(copy, at: 0, from: t.parameter) }
        }
    }

    /// One `zero` after another.
    public func zero(_ tensors: [Tensor]) { tensors.forEach(zero) }
}
