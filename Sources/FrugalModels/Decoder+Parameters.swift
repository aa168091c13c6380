// Choosing what trains: LoRA adapters on chosen projections, or every weight of chosen layers.
import FrugalCore
import FrugalFormats

extension Decoder {
    /// Attaches LoRA adapters to the targeted projections and returns them as the trainable set.
    /// - Parameters:
    ///   - configuration: rank, alpha, dropout, targets, rsLoRA.
    ///   - seed: seeds the initial `A` matrices (each adapter draws from its own stream).
    ///   - frozenLayers: block indices that get no adapters.
    ///   - shareBlockGradients: one block's gradient tensors for every block (for the fused
    ///     optimizer step).
    ///   - dtype: how the adapters are stored: f32, or bf16 under pure bf16 (`trainableDType`).
    /// - Throws: `FrugalError.invalidArgument` for an unknown target, a non-positive rank or a
    ///   frozen layer the model lacks.
    public func attachLoRA(_ lora: LoRAConfiguration, seed: UInt64, frozenLayers: Set<Int> = [],
                           shareBlockGradients: Bool = false, dtype: DType = .f32) throws -> TrainableParameters {
        let backend = try trainingBackend()
        try configuration.checkFrozenLayers(frozenLayers)
        guard lora.rank > 0 else { throw FrugalError.invalidArgument("LoRA rank must be positive, found \(lora.rank)") }
        guard lora.dropout >= 0 && lora.dropout < 1 else { throw FrugalError.invalidArgument("LoRA dropout must be in [0, 1)") }
        let roles = try ProjectionRole.parse(lora.targets)
        let naming = TensorNaming.huggingFace(configuration.architecture)
        var named = [(name: String, tensor: Tensor, block: Int?)]()
        for index in weights.blocks.indices where !frozenLayers.contains(index) {
            for role in ProjectionRole.allCases where roles.contains(role) {
                guard let linear = weights.blocks[index][role] else { continue }
                let adapter = LoRAAdapter(backend: backend, inputs: linear.inputs, outputs: linear.outputs, lora,
                                          seed: seed &+ UInt64(index * 16 + role.ordinal), dtype: dtype)
                weights.blocks[index][role]?.lora = adapter
                let module = naming.module(role, index)
                named.append((module + ".lora_A.weight", adapter.a, index))
                named.append((module + ".lora_B.weight", adapter.b, index))
            }
        }
        return TrainableParameters(backend: backend, named: named, shareBlockGradients: shareBlockGradients)
    }

    /// Every weight of the model as the trainable set (a full fine-tune), except those of
    /// `frozenLayers`. The weights must be trainable f32 or bf16 (load with `trainable: true`, or
    /// `trainable: true, dtype: .bf16` under pure bf16).
    /// - Parameter shareBlockGradients: one block's gradient tensors for every block (for the
    ///   fused optimizer step).
    public func allWeights(frozenLayers: Set<Int> = [], shareBlockGradients: Bool = false) throws -> TrainableParameters {
        let backend = try trainingBackend()
        try configuration.checkFrozenLayers(frozenLayers)
        let named = weights.namedTensors.map { name, tensor -> (name: String, tensor: Tensor, block: Int?) in
            let block = name.hasPrefix("blocks.") ? Int(name.split(separator: ".")[1]) : nil
            return (name, tensor, block)
        }.filter { $0.block.map { !frozenLayers.contains($0) } ?? true }
        // The forward keeps a projection's input for its backward only when the weight is
        // `trainable` memory or adapted (`Decoder.keepsInput`).
        for (name, tensor, _) in named where tensor.storage.category != .trainable || tensor.dtype != .f32 && tensor.dtype != .bf16 {
            throw FrugalError.invalidArgument("weight '\(name)' is \(tensor.dtype.rawValue) \(tensor.storage.category.rawValue): a full fine-tune needs the model loaded with trainable f32 (or bf16) weights")
        }
        return TrainableParameters(backend: backend, named: named, shareBlockGradients: shareBlockGradients)
    }

    /// Replaces trainable parameter `i` (an f32 tensor) by a copy of it in `dtype` (f16 or bf16,
    /// rounded to nearest even), in the model's weights (a projection's weight, bias or LoRA
    /// adapter, a norm, an embedding, the head — both roles when tied) and in `parameters` (same
    /// name, block and gradient); the f32 tensor is freed once nothing else holds it.
    ///
    /// This is how fp16 and bf16 store their compute copies in 16 bits: the trainable tensors are
    /// created (LoRA's `A` drawn) or loaded in f32, so the optimizer's masters start from the
    /// exact values, and `Optimizer.init` calls this for each tensor right after taking its
    /// master — at most one f32 tensor beside the masters and 16-bit copies made so far. A
    /// tensor already 16-bit, or `dtype` f32, is left as it is.
    public func storeTrainable(_ parameters: TrainableParameters, at i: Int, as dtype: DType) {
        let old = parameters.parameters[i].value
        guard old.dtype == .f32, dtype != .f32 else { return }
        precondition(dtype == .f16 || dtype == .bf16, "trainable tensors are stored in f32, f16 or bf16, not \(dtype)")
        let copy = backend.empty(old.shape, dtype, .trainable)
        backend.copy(copy, at: 0, from: old)
        precondition(weights.replace(old, with: copy), "'\(parameters.parameters[i].name)' is not a tensor of the model")
        parameters.replaceValue(at: i, with: copy)
    }

    /// Turns every LoRA adapter on or off (off gives the base model, e.g. as a frozen reference).
    public func setAdaptersEnabled(_ enabled: Bool) {
        for block in weights.blocks {
            for role in ProjectionRole.allCases { block[role]?.lora?.enabled = enabled }
        }
    }
}

extension ProjectionRole {
    /// A small stable number per role, for seeding.
    var ordinal: Int { ProjectionRole.allCases.firstIndex(of: self)! }
}

extension TensorNaming {
    /// The Hugging Face module path of a block's projection (`model.layers.3.self_attn.q_proj`).
    func module(_ role: ProjectionRole, _ index: Int) -> String {
        switch role {
        case .q: query(index)
        case .k: key(index)
        case .v: value(index)
        case .o: output(index)
        case .gate: gate?(index) ?? "gate"
        case .up: up(index)
        case .down: down(index)
        }
    }
}
