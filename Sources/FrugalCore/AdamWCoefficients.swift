// AdamWCoefficients: one AdamW step's scalars and its per-value update, in PyTorch's order —
// shared by the f32 and 8-bit steps of every backend, so they do the same arithmetic.
import Foundation

/// The scalars of one AdamW step, in the order of `torch.optim.AdamW` (single-tensor, not amsgrad):
/// `p *= 1 − lr·wd; m += (1−β1)·(g − m); v = β2·v + (1−β2)·g²;
/// p −= (lr/(1−β1^step)) · m / (√v/√(1−β2^step) + ε)`.
public struct AdamWCoefficients: Sendable {
    public let beta1: Float, beta2: Float, epsilon: Float
    /// `1 − lr·wd`, the decoupled weight decay.
    public let decay: Float
    /// `lr / (1 − β1^step)`, computed in double.
    public let stepSize: Float
    /// `√(1 − β2^step)`, computed in double.
    public let correction2: Float

    /// The scalars of update number `step` (1-based).
    public init(step: Int, learningRate: Float, beta1: Float, beta2: Float, epsilon: Float, weightDecay: Float) {
        precondition(step >= 1, "AdamW step \(step) (steps count from 1)")
        self.beta1 = beta1; self.beta2 = beta2; self.epsilon = epsilon
        decay = 1 - learningRate * weightDecay
        stepSize = Float(Double(learningRate) / (1 - pow(Double(beta1), Double(step))))
        correction2 = Float((1 - pow(Double(beta2), Double(step))).squareRoot())
    }

    /// Updates one value `p` and its moments `m`, `v` from its gradient `g`.
    @inlinable @inline(__always)
    public func update(_ p: inout Float, _ m: inout Float, _ v: inout Float, gradient g: Float) {
        m += (1 - beta1) * (g - m)
        v = v * beta2 + (1 - beta2) * g * g
        p = p * decay - stepSize * (m / (v.squareRoot() / correction2 + epsilon))
    }
}
