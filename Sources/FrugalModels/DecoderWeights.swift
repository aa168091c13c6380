// DecoderWeights: the tensors of one decoder, named by role rather than by file format.
import FrugalCore
import FrugalFormats

/// A projection `y = x·Wᵀ + b`; the weight may be f32, f16, bf16 or packed blocks.
public struct Linear: @unchecked Sendable {
    /// (outputs, inputs)
    public var weight: Tensor
    /// (outputs), when the projection has a bias.
    public var bias: Tensor?
    /// A low-rank adapter beside the weight, when LoRA targets this projection.
    public var lora: LoRAAdapter?

    public init(weight: Tensor, bias: Tensor? = nil, lora: LoRAAdapter? = nil) {
        self.weight = weight
        self.bias = bias
        self.lora = lora
    }

    public var inputs: Int { weight.shape.last }
    public var outputs: Int { weight.shape.rows }
}

/// The scale (and for LayerNorm the shift) of a normalization.
public struct Norm: @unchecked Sendable {
    /// (hidden)
    public var weight: Tensor
    /// (hidden), LayerNorm only.
    public var bias: Tensor?

    public init(weight: Tensor, bias: Tensor? = nil) {
        self.weight = weight
        self.bias = bias
    }
}

/// One transformer block's weights.
public struct BlockWeights: @unchecked Sendable {
    public var attentionNorm: Norm
    public var query: Linear
    public var key: Linear
    public var value: Linear
    public var output: Linear
    public var mlpNorm: Norm
    /// The gate of a gated MLP (SwiGLU/GeGLU); nil for a plain two-layer MLP.
    public var gate: Linear?
    public var up: Linear
    public var down: Linear

    /// The projections that read the MLP's input: the gate (when gated) and up.
    public var mlpInputs: [Linear] { [gate, up].compactMap { $0 } }

    /// The projection playing `role`, when the block has one.
    public subscript(role: ProjectionRole) -> Linear? {
        get {
            switch role {
            case .q: query
            case .k: key
            case .v: value
            case .o: output
            case .gate: gate
            case .up: up
            case .down: down
            }
        }
        set {
            guard let newValue else { return }
            switch role {
            case .q: query = newValue
            case .k: key = newValue
            case .v: value = newValue
            case .o: output = newValue
            case .gate: gate = newValue
            case .up: up = newValue
            case .down: down = newValue
            }
        }
    }
}

/// Every weight of a decoder.
public struct DecoderWeights: @unchecked Sendable {
    /// (vocab, embedding dim)
    public var tokenEmbedding: Tensor
    /// (positions, hidden): OPT and GPT-2's learned positions.
    public var positionEmbedding: Tensor?
    /// OPT's projection from the embedding dim to hidden, and back before the head.
    public var projectIn: Linear?
    public var projectOut: Linear?
    public var blocks: [BlockWeights]
    public var finalNorm: Norm?
    /// (vocab, embedding dim); the token embedding itself when tied.
    public var head: Tensor

    /// All tensors with their role names, for accounting and inspection.
    public var namedTensors: [(String, Tensor)] {
        var list: [(String, Tensor)] = [("token_embedding", tokenEmbedding)]
        func add(_ name: String, _ linear: Linear?) {
            guard let linear else { return }
            list.append((name + ".weight", linear.weight))
            if let b = linear.bias { list.append((name + ".bias", b)) }
        }
        func add(_ name: String, _ norm: Norm?) {
            guard let norm else { return }
            list.append((name + ".weight", norm.weight))
            if let b = norm.bias { list.append((name + ".bias", b)) }
        }
        if let p = positionEmbedding { list.append(("position_embedding", p)) }
        add("project_in", projectIn)
        for (i, b) in blocks.enumerated() {
            let p = "blocks.\(i)."
            add(p + "attention_norm", b.attentionNorm)
            add(p + "query", b.query); add(p + "key", b.key); add(p + "value", b.value); add(p + "output", b.output)
            add(p + "mlp_norm", b.mlpNorm)
            add(p + "gate", b.gate); add(p + "up", b.up); add(p + "down", b.down)
        }
        add("final_norm", finalNorm)
        add("project_out", projectOut)
        if head.storage !== tokenEmbedding.storage { list.append(("head", head)) }
        return list
    }

    /// Puts `new` wherever the weights (and their LoRA adapters) hold `old` (the same storage
    /// and offset); whether any did.
    mutating func replace(_ old: Tensor, with new: Tensor) -> Bool {
        var found = false
        func swap(_ t: inout Tensor) {
            if t.storage === old.storage && t.byteOffset == old.byteOffset { t = new; found = true }
        }
        func swap(_ t: inout Tensor?) {
            guard var u = t else { return }
            swap(&u)
            t = u
        }
        func swap(_ linear: inout Linear?) {
            guard var l = linear else { return }
            swap(&l.weight); swap(&l.bias)
            if let lora = l.lora { swap(&lora.a); swap(&lora.b) }
            linear = l
        }
        func swap(_ norm: inout Norm?) {
            guard var n = norm else { return }
            swap(&n.weight); swap(&n.bias)
            norm = n
        }
        swap(&tokenEmbedding); swap(&positionEmbedding); swap(&head)
        swap(&projectIn); swap(&projectOut); swap(&finalNorm)
        for i in blocks.indices {
            var norms: [Norm?] = [blocks[i].attentionNorm, blocks[i].mlpNorm]
            for k in norms.indices { swap(&norms[k]) }
            blocks[i].attentionNorm = norms[0]!
            blocks[i].mlpNorm = norms[1]!
            for role in ProjectionRole.allCases {
                var linear = blocks[i][role]
                swap(&linear)
                blocks[i][role] = linear
            }
        }
        return found
    }
}
