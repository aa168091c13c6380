// Optimizer: AdamW (f32 or 8-bit moments) or SGD over the trainable set, with f32 masters under mixed precision.
import FrugalCore
import FrugalModels

/// Updates trainable tensors from their gradients.
///
/// Under fp16/bf16 the model computes with weights rounded to the compute dtype while the
/// optimizer updates f32 masters and copies them back rounded; under pure bf16 the weights
/// themselves are rounded after every update (small updates can be lost, as on the GPU).
public final class Optimizer: @unchecked Sendable {
    /// One parameter's optimizer state.
    struct Slot {
        let parameter: TrainableParameters.Parameter
        /// f32 master copy, when the policy keeps one.
        let master: Tensor?
        /// AdamW first moment (f32, or 8-bit `dynamic8` in whole blocks), or SGD momentum buffer.
        let first: Tensor
        /// AdamW second moment (f32, or 8-bit `dynamic8Unsigned` in whole blocks).
        let second: Tensor?
    }

    let slots: [Slot]
    let configuration: TrainingConfiguration
    let backend: TrainingBackend
    /// Updates applied so far (AdamW's bias-correction step).
    public internal(set) var updates = 0

    /// Allocates the state (as `optimizer` memory) and rounds the weights to the compute dtype.
    public init(_ parameters: TrainableParameters, configuration: TrainingConfiguration, backend: TrainingBackend) {
        self.configuration = configuration
        self.backend = backend
        let policy = configuration.precision
        slots = parameters.parameters.map { p in
            var master: Tensor?
            if policy.keepsMasters {
                let m = backend.zeros(p.value.shape, .f32, .optimizer)
                backend.copy(m, at: 0, from: p.value)
                master = m
            }
            backend.roundInPlace(p.value, to: policy.computeDType)
            let shape = p.value.shape, padded: Shape = [DynamicQuantization.paddedCount(shape.count)]
            return switch configuration.optimizer {
            case .adamW:
                Slot(parameter: p, master: master, first: backend.zeros(shape, .f32, .optimizer),
                     second: backend.zeros(shape, .f32, .optimizer))
            case .adamW8bit:
                Slot(parameter: p, master: master, first: backend.zeros(padded, .dynamic8, .optimizer),
                     second: backend.zeros(padded, .dynamic8Unsigned, .optimizer))
            case .sgd:
                Slot(parameter: p, master: master, first: backend.zeros(shape, .f32, .optimizer), second: nil)
            }
        }
    }

    /// Applies one update with learning rate `rate` from the current gradients.
    public func step(rate: Float) {
        beginUpdate()
        apply(rate: rate, to: slots.indices)
    }

    /// Counts a new update (AdamW's bias-correction step); `apply(rate:to:)` then applies it to the
    /// parameters a part at a time (the fused step: each block as backward finishes it).
    func beginUpdate() { updates += 1 }

    /// Applies the current update to the parameters at `indices` (of the trainable set).
    func apply(rate: Float, to indices: some Sequence<Int>) {
        let c = configuration
        for slot in indices.map({ slots[$0] }) {
            let target = slot.master ?? slot.parameter.value
            switch c.optimizer {
            case .adamW:
                backend.adamW(target, gradient: slot.parameter.gradient, m: slot.first, v: slot.second!, step: updates,
                              learningRate: rate, beta1: c.beta1, beta2: c.beta2, epsilon: c.epsilon, weightDecay: c.weightDecay)
            case .adamW8bit:
                backend.adamW8bit(target, gradient: slot.parameter.gradient, m: slot.first, v: slot.second!, step: updates,
                                  learningRate: rate, beta1: c.beta1, beta2: c.beta2, epsilon: c.epsilon,
                                  weightDecay: c.weightDecay)
            case .sgd:
                backend.sgd(target, gradient: slot.parameter.gradient, momentumBuffer: slot.first, learningRate: rate,
                            momentum: c.momentum, weightDecay: c.weightDecay)
            }
            if let master = slot.master { backend.copy(slot.parameter.value, at: 0, from: master) }
            backend.roundInPlace(slot.parameter.value, to: c.precision.computeDType)
        }
    }

    /// Every state tensor by name, for checkpoints: `<name>` (the weight as computed with),
    /// `<name>.master`, `<name>.m`, `<name>.v`.
    var stateTensors: [(String, Tensor)] {
        slots.flatMap { slot -> [(String, Tensor)] in
            let name = slot.parameter.name
            var list = [(name, slot.parameter.value), (name + ".m", slot.first)]
            if let master = slot.master { list.append((name + ".master", master)) }
            if let second = slot.second { list.append((name + ".v", second)) }
            return list
        }
    }
}
