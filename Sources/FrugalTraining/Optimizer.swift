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
/// into a host buffer, runs the same arithmetic there, and copies the rounded weight back (a bf16
/// weight through that buffer, rounded into bf16 on the host): the device's weights come out
/// bit-identical to an update on the device where both compute alike.
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
    /// Offloaded: the host buffer each gradient is copied into (as long as the largest weight), which
    /// then holds the rounded weight on its way back.
    private let hostGradient: Tensor?
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
        let hostGradient = host.map { host in
            host.empty([parameters.parameters.map(\.value.count).max() ?? 0], .f32, .gradients)
        }
        /// An f32 copy of `value` on the state's backend (a 16-bit weight crosses to the host in its
        /// own dtype, through the gradient buffer, and is widened there).
        func copy(of value: Tensor) -> Tensor {
            let copy = state.zeros(value.shape, .f32, .optimizer)
            if let host, let hostGradient, value.dtype != .f32 {
                let bits = Tensor(storage: hostGradient.storage, shape: value.shape, dtype: value.dtype)
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
        self.hostGradient = hostGradient
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
        let c = configuration, state: TrainingBackend = host ?? backend
        for slot in indices.map({ slots[$0] }) {
            let parameter = parameters.parameters[slot.index]
            // Where the update reads the gradient and leaves the weight as computed with.
            var gradient = parameter.gradient, weight = parameter.value
            if let hostGradient {
                gradient = Tensor(storage: hostGradient.storage, shape: weight.shape, dtype: .f32)
                backend.copy(gradient, at: 0, from: parameter.gradient)
                // The master rounded into the spent gradient's place, or the weight's host copy itself.
                weight = c.precision.keepsMasters ? gradient : slot.master!
            }
            let target = slot.master ?? weight
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
            if let host, let hostGradient, parameter.value.dtype != .f32 {
                // A 16-bit weight crosses in its dtype, through the spent gradient's buffer, rounded
                // to nearest even from the master (fp16, bf16) or from the host copy rounded in
                // place (pure bf16) — never from the buffer itself, which narrowing in place (in
                // parallel chunks) would overwrite before it is read.
                if !c.precision.keepsMasters { state.roundInPlace(target, to: c.precision.computeDType) }
                let bits = Tensor(storage: hostGradient.storage, shape: weight.shape, dtype: parameter.value.dtype)
                host.copy(bits, at: 0, from: target)
                backend.copy(parameter.value, at: 0, from: bits)
                continue
            }
            if c.precision.keepsMasters { state.copy(weight, at: 0, from: target) }
            // A 16-bit weight updated in place is rounded already (the update writes it so).
            if weight.dtype == .f32 { state.roundInPlace(weight, to: c.precision.computeDType) }
            if host != nil { backend.copy(parameter.value, at: 0, from: weight) }
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
