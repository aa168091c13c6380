// Optimizer: AdamW (f32 or 8-bit moments) or SGD over the trainable set, with f32 masters under mixed
// precision, on the device or offloaded to host memory.
import FrugalCore
import FrugalCPU
import FrugalModels

/// Updates trainable tensors from their gradients.
///
/// Under fp16/bf16 the model computes with weights rounded to the compute dtype — 16-bit compute
/// copies, 2 bytes a value, that replace the f32 tensors once their masters exist
/// (`storeComputeCopy`) — while the optimizer updates f32 masters and copies them back rounded to
/// nearest even; under pure bf16 the weights are
/// stored in bf16 themselves (`TrainingConfiguration.trainableDType`) and the update reads each
/// widened, computes in f32 and writes it rounded to nearest even (small updates can be lost, as
/// on the GPU). f32 weights under pure bf16 (a caller that made them so) are rounded in place
/// after each update instead, with the same results.
///
/// With `offloadOptimizer` the state lives in host memory, on a `CPUBackend` of its own counted in
/// the device's `hostLedger`, and always with an f32 copy of each weight (the master, or under fp32
/// and pure bf16 the weight itself, rounded as the device's is). An update copies the gradient
/// into a pinned host buffer, runs the same arithmetic there, and copies the weight back through
/// that buffer in its dtype (rounded on the host): the device's weights come out bit-identical to
/// an update on the device where both compute alike. The copies are pipelined with the host's
/// work (`Optimizer+Offload.swift`), and under the fused step the host updates each block while
/// the device goes on with backward.
public final class Optimizer: @unchecked Sendable {
    /// One parameter's optimizer state.
    struct Slot {
        /// The parameter's index in the trainable set (whose value may be replaced by its 16-bit
        /// compute copy after the master is taken).
        let index: Int
        /// The f32 copy the update applies to: the master under fp16 and bf16, the weight's host copy
        /// when offloaded; nil when the update applies to the weight itself.
        let master: Tensor?
        /// AdamW first moment (f32, or 8-bit `dynamic8` in whole blocks), or SGD momentum buffer.
        let first: Tensor
        /// AdamW second moment (f32, or 8-bit `dynamic8Unsigned` in whole blocks).
        let second: Tensor?
    }

    let slots: [Slot]
    /// The trainable set.
    let parameters: TrainableParameters
    let configuration: TrainingConfiguration
    let backend: TrainingBackend
    /// The host backend holding the state when offloaded.
    let host: CPUBackend?
    /// Updates applied so far (AdamW's bias-correction step).
    public internal(set) var updates = 0

    /// Allocates the state (as `optimizer` memory, on the host when offloaded) and rounds the
    /// weights to the compute dtype.
    /// - Parameter storeComputeCopy: under fp16 and bf16, called with each parameter's index as
    ///   soon as its f32 master exists, to replace its f32 tensor by a 16-bit compute copy
    ///   (`Decoder.storeTrainable`, `ValueHead.storeTrainable`): the masters start from the
    ///   exact f32 values, and the f32 tensors go one at a time. Without it (or under fp32 and
    ///   pure bf16) the tensors stay as they are, f32 ones rounded in place.
    public init(_ parameters: TrainableParameters, configuration: TrainingConfiguration, backend: TrainingBackend,
                storeComputeCopy: ((Int) -> Void)? = nil) {
        self.configuration = configuration
        self.parameters = parameters
        self.backend = backend
        let host = configuration.offloadOptimizer ? CPUBackend(ledger: backend.hostLedger) : nil
        let state: TrainingBackend = host ?? backend
        let policy = configuration.precision
        /// An f32 copy of `value` on the state's backend (a 16-bit weight crosses to the host in its
        /// own dtype, through a buffer counted as gradients as the update's are, and is widened there).
        func copy(of value: Tensor) -> Tensor {
            let copy = state.zeros(value.shape, .f32, .optimizer)
            if let host, value.dtype != .f32 {
                let bits = host.empty(value.shape, value.dtype, .gradients)
                backend.copy(bits, at: 0, from: value)
                host.copy(copy, at: 0, from: bits)
            } else {
                backend.copy(copy, at: 0, from: value)
            }
            return copy
        }
        // By index, not over a copy of the list, which would keep every replaced f32 tensor alive.
        slots = parameters.parameters.indices.map { i in
            let p = parameters.parameters[i]
            var master = policy.keepsMasters ? copy(of: p.value) : nil
            if policy.keepsMasters, let storeComputeCopy {
                // The f32 tensor gives way to its copy in the compute dtype, rounded to nearest even.
                storeComputeCopy(i)
            } else if p.value.dtype == .f32 {
                // A weight stored in 16 bits (pure bf16) already holds its rounded values.
                backend.roundInPlace(p.value, to: policy.computeDType)
            }
            if host != nil, master == nil { master = copy(of: parameters.parameters[i].value) }
            let shape = p.value.shape, padded: Shape = [DynamicQuantization.paddedCount(shape.count)]
            return switch configuration.optimizer {
            case .adamW:
                Slot(index: i, master: master, first: state.zeros(shape, .f32, .optimizer),
                     second: state.zeros(shape, .f32, .optimizer))
            case .adamW8bit:
                Slot(index: i, master: master, first: state.zeros(padded, .dynamic8, .optimizer),
                     second: state.zeros(padded, .dynamic8Unsigned, .optimizer))
            case .sgd:
                Slot(index: i, master: master, first: state.zeros(shape, .f32, .optimizer), second: nil)
            }
        }
        self.host = host
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
        if host != nil { return applyOffloaded(rate: rate, to: Array(indices)) }
        let c = configuration, chosen = indices.map { slots[$0] }
        // AdamW steps every parameter in one call, writing a master's 16-bit compute copy as it goes.
        let together = c.optimizer == .adamW
        if together {
            backend.adamW(chosen.map { slot in
                let p = parameters.parameters[slot.index], copy = slot.master != nil && p.value.dtype != .f32 ? p.value : nil
                return AdamWTensors(parameter: slot.master ?? p.value, roundedCopy: copy, gradient: p.gradient, m: slot.first,
                                    v: slot.second!)
            }, step: updates, learningRate: rate, beta1: c.beta1, beta2: c.beta2, epsilon: c.epsilon, weightDecay: c.weightDecay)
        }
        for slot in chosen {
            let weight = parameters.parameters[slot.index].value
            if !together { update(slot, slot.master ?? weight, gradient: parameters.parameters[slot.index].gradient, rate: rate, on: backend) }
            if let master = slot.master, !(together && weight.dtype != .f32) { backend.copy(weight, at: 0, from: master) }
            // A 16-bit weight updated in place is rounded already (the update writes it so).
            if weight.dtype == .f32 { backend.roundInPlace(weight, to: c.precision.computeDType) }
        }
    }

    /// One slot's update of `target` (the master, or the weight itself) from `gradient`, on `state`.
    func update(_ slot: Slot, _ target: Tensor, gradient: Tensor, rate: Float, on state: TrainingBackend) {
        let c = configuration
        switch c.optimizer {
        case .adamW:
            state.adamW(target, gradient: gradient, m: slot.first, v: slot.second!, step: updates,
                        learningRate: rate, beta1: c.beta1, beta2: c.beta2, epsilon: c.epsilon, weightDecay: c.weightDecay)
        case .adamW8bit:
            state.adamW8bit(target, gradient: gradient, m: slot.first, v: slot.second!, step: updates,
                            learningRate: rate, beta1: c.beta1, beta2: c.beta2, epsilon: c.epsilon, weightDecay: c.weightDecay)
        case .sgd:
            state.sgd(target, gradient: gradient, momentumBuffer: slot.first, learningRate: rate,
                      momentum: c.momentum, weightDecay: c.weightDecay)
        }
    }

    /// Every state tensor by name, for checkpoints: `<name>` (the weight as computed with, in its
    /// dtype),
    /// `<name>.master` (offloaded, also the weight's host copy), `<name>.m`, `<name>.v` — host
    /// tensors when offloaded, which the device backend reads and writes with `copy`.
    var stateTensors: [(String, Tensor)] {
        slots.flatMap { slot -> [(String, Tensor)] in
            let parameter = parameters.parameters[slot.index], name = parameter.name
            var list = [(name, parameter.value), (name + ".m", slot.first)]
            if let master = slot.master { list.append((name + ".master", master)) }
            if let second = slot.second { list.append((name + ".v", second)) }
            return list
        }
    }
}
