// BlockTape: what one block's forward keeps for its backward.
import FrugalCore
import FrugalFormats

/// The LoRA branch's saved inputs: the (dropped-out) input and `input·Aᵀ`.
struct LoRATape {
    var input: Tensor
    var hidden: Tensor
    /// The dropout mask (0 or 1/keep), when dropout was applied.
    var mask: Tensor?
}

/// The activations a block's backward reads, filled by its forward.
///
/// Pre-norm: `h1 = N1(x)`, `s1 = x + A(h1)`, `h2 = N2(s1)`, `s2 = s1 + M(h2)`.
/// Post-norm: `h1 = x`, `s1 = x + A(h1)`, `h2 = N1(s1)`, `s2 = h2 + M(h2)`, out `N2(s2)`.
///
/// A projection's input (`h1`, `h2`, `product`) is kept only when its backward reads it
/// (`Decoder.keepsInput`): a frozen weight without an adapter needs only its weight to pass the
/// gradient on.
final class BlockTape {
    /// Whether dropout applies (training) or not (evaluation).
    let training: Bool
    /// The dropout stream; a recomputed block starts from the same state, so masks repeat.
    var random: SplitMix64
    /// The stream's state when the block started.
    let startRandom: SplitMix64

    var input: Tensor!, s1: Tensor!, s2: Tensor!
    /// The inputs of q, k and v, and of gate and up, when kept.
    var h1: Tensor?, h2: Tensor?
    /// A checkpoint's input while it waits in host memory (activation offload), instead of `input`.
    var offloaded: HostCopy?
    /// Query, key (after rotary) and value; attention output before the output projection.
    var q: Tensor!, k: Tensor!, v: Tensor!, attended: Tensor!
    /// The attention forward's log-sum-exp per query row, when the backend wrote it.
    var logSumExp: Tensor?
    /// MLP: gate and up projections (before the activation), and their product (the down
    /// projection's input, when kept). A plain MLP whose activation's derivative reads from its
    /// output (`Activation.derivativeFromOutput`: relu) keeps the product instead of up.
    var gate: Tensor?, up: Tensor?, product: Tensor?
    /// The dtype the forward stored its activations in.
    var activations: DType { s1.dtype }
    var lora: [ProjectionRole: LoRATape] = [:]

    init(training: Bool, random: SplitMix64) {
        self.training = training
        self.random = random
        self.startRandom = random
    }

    /// A dropout mask of `shape` stored as `dtype`: each value 1/keep (rounded to `dtype`) with
    /// probability `keep`, else 0.
    func dropoutMask(_ shape: Shape, _ dtype: DType, keep: Float, on backend: Backend) -> Tensor {
        let values = (0..<shape.count).map { _ in random.nextUniform() < keep ? 1 / keep : 0 }
        let mask = values.withUnsafeBytes { backend.upload($0, shape, .f32, .activations) }
        return backend.converted(mask, to: dtype)
    }
}
