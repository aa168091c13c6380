// ModelConfiguration: one description of a decoder-only model for every family, read from a
// Hugging Face config.json, and the rotary inverse frequencies it implies.
import Foundation
import FrugalCore

/// The shape and the family traits of a decoder-only language model.
///
/// One struct describes Llama 2/3 (and Mistral, Qwen2, SmolLM, which are Llama with flags),
/// Gemma, Phi-3, OPT and GPT-2: the decoder reads only these fields, never the family name,
/// except to find tensor names.
public struct ModelConfiguration: Codable, Sendable, Equatable {
    /// The decoder implementation a model uses.
    public enum Family: String, Codable, Sendable, CaseIterable {
        case llama, gemma, phi3, opt, gpt2
    }

    /// The normalization layer.
    public enum NormKind: String, Codable, Sendable {
        /// RMSNorm with a weight and no bias.
        case rms
        /// LayerNorm with a weight and a bias.
        case layer
    }

    /// A change to the rotary inverse frequencies for longer contexts.
    public enum RopeScaling: Codable, Sendable, Equatable {
        /// Every inverse frequency divided by `factor` (position interpolation).
        case linear(factor: Double)
        /// Llama 3.1's rule: low frequencies divided by `factor`, high ones kept, the band
        /// between smoothly interpolated.
        case llama3(factor: Double, lowFrequencyFactor: Double, highFrequencyFactor: Double, originalMaxPositions: Int)
    }

    /// The decoder family.
    public var architecture: Family
    /// Hugging Face's `model_type` as found (`mistral`, `qwen2`, …).
    public var modelType: String
    public var vocabSize: Int
    public var hiddenSize: Int
    /// Width of the MLP's hidden layer.
    public var intermediateSize: Int
    /// Number of decoder blocks.
    public var layers: Int
    /// Query heads.
    public var heads: Int
    /// Key and value heads (fewer than `heads` with grouped-query attention).
    public var kvHeads: Int
    /// Width of one head (`heads · headDim` may differ from `hiddenSize`, as in Gemma).
    public var headDim: Int
    /// Longest sequence the model supports.
    public var maxPositions: Int
    /// Epsilon of every norm.
    public var normEps: Float
    public var normKind: NormKind
    /// Added to RMSNorm weights before scaling: 1 for Gemma's `x · (1 + w)`, else 0.
    public var normWeightOffset: Float
    /// The MLP activation (applied to the gate in a gated MLP).
    public var activation: Activation
    /// Whether the MLP is `down(act(gate(x)) · up(x))` rather than `fc2(act(fc1(x)))`.
    public var gatedMLP: Bool
    /// Base of the rotary frequencies.
    public var ropeTheta: Double
    public var ropeScaling: RopeScaling?
    /// Fraction of each head's dimensions that rotate (the first ones).
    public var partialRotaryFactor: Double
    /// Whether the output projection reuses the token embedding.
    public var tiedEmbeddings: Bool
    /// Multiplies token embeddings (Gemma: √hiddenSize; otherwise 1).
    public var embeddingScale: Float
    /// Whether the query, key and value projections have biases.
    public var attentionBias: Bool
    /// Whether the attention output projection has a bias.
    public var outputBias: Bool
    /// Whether the MLP projections have biases.
    public var mlpBias: Bool
    /// Whether positions come from a learned table (OPT, GPT-2) rather than rotary embeddings.
    public var learnedPositions: Bool
    /// Added to a position before its table lookup (OPT: 2).
    public var positionOffset: Int
    /// Whether each block normalizes its input (pre-norm); false for post-norm OPT-350m.
    public var normBeforeBlock: Bool
    /// Whether a norm follows the last block.
    public var finalNorm: Bool
    /// Width of the token embeddings when it differs from `hiddenSize` (OPT's project_in/out);
    /// nil when there is no projection.
    public var wordEmbedProjDim: Int?
    public var bosTokenID: Int?
    /// Tokens that end generation (a config may give one or a list).
    public var eosTokenIDs: [Int]

    /// A configuration from its fields; defaults describe a Llama-style model.
    public init(architecture: Family, modelType: String? = nil, vocabSize: Int, hiddenSize: Int,
                intermediateSize: Int, layers: Int, heads: Int, kvHeads: Int, headDim: Int,
                maxPositions: Int, normEps: Float, normKind: NormKind = .rms, normWeightOffset: Float = 0,
                activation: Activation = .silu, gatedMLP: Bool = true, ropeTheta: Double = 10_000,
                ropeScaling: RopeScaling? = nil, partialRotaryFactor: Double = 1, tiedEmbeddings: Bool = false,
                embeddingScale: Float = 1, attentionBias: Bool = false, outputBias: Bool = false,
                mlpBias: Bool = false, learnedPositions: Bool = false, positionOffset: Int = 0,
                normBeforeBlock: Bool = true, finalNorm: Bool = true, wordEmbedProjDim: Int? = nil,
                bosTokenID: Int? = nil, eosTokenIDs: [Int] = []) {
        self.architecture = architecture
        self.modelType = modelType ?? architecture.rawValue
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.layers = layers
        self.heads = heads
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.maxPositions = maxPositions
        self.normEps = normEps
        self.normKind = normKind
        self.normWeightOffset = normWeightOffset
        self.activation = activation
        self.gatedMLP = gatedMLP
        self.ropeTheta = ropeTheta
        self.ropeScaling = ropeScaling
        self.partialRotaryFactor = partialRotaryFactor
        self.tiedEmbeddings = tiedEmbeddings
        self.embeddingScale = embeddingScale
        self.attentionBias = attentionBias
        self.outputBias = outputBias
        self.mlpBias = mlpBias
        self.learnedPositions = learnedPositions
        self.positionOffset = positionOffset
        self.normBeforeBlock = normBeforeBlock
        self.finalNorm = finalNorm
        self.wordEmbedProjDim = wordEmbedProjDim
        self.bosTokenID = bosTokenID
        self.eosTokenIDs = eosTokenIDs
    }

    /// Whether attention uses rotary position embeddings.
    public var usesRotaryPositions: Bool { !learnedPositions }

    /// Number of dimensions of each head that rotate (`headDim · partialRotaryFactor`, as HF truncates).
    public var rotaryDims: Int { usesRotaryPositions ? Int(Double(headDim) * partialRotaryFactor) : 0 }

    /// The rotary inverse frequencies, one per rotating pair (`rotaryDims / 2` values), as
    /// Hugging Face computes them in float32: `1 / θ^(2i / rotaryDims)`, then the scaling rule.
    /// Empty for learned positions.
    public func ropeInverseFrequencies() -> [Float] {
        let dims = rotaryDims
        guard dims >= 2 else { return [] }
        let base = Float(ropeTheta)
        let plain = stride(from: 0, to: dims, by: 2).map { i in 1 / pow(base, Float(i) / Float(dims)) }
        switch ropeScaling {
        case nil:
            return plain
        case let .linear(factor):
            return plain.map { $0 / Float(factor) }
        case let .llama3(factor, low, high, original):
            let factor = Float(factor), low = Float(low), high = Float(high), original = Float(original)
            let lowFrequencyWavelength = original / low
            let highFrequencyWavelength = original / high
            return plain.map { frequency in
                let wavelength = Float(2 * Double.pi) / frequency
                if wavelength < highFrequencyWavelength { return frequency }
                if wavelength > lowFrequencyWavelength { return frequency / factor }
                let smooth = (original / wavelength - low) / (high - low)
                return (1 - smooth) * frequency / factor + smooth * frequency
            }
        }
    }
}

extension ModelConfiguration {
    /// Throws `FrugalError.invalidArgument` naming the lowest of `frozenLayers` (`--freeze-layers`)
    /// that is not one of the model's blocks.
    public func checkFrozenLayers(_ frozenLayers: Set<Int>) throws {
        guard let block = frozenLayers.sorted().first(where: { !(0..<layers).contains($0) }) else { return }
        throw FrugalError.invalidArgument("frozen layer \(block) is not a block of this model (0…\(layers - 1))")
    }
}

// MARK: - Hugging Face config.json

extension ModelConfiguration {
    /// Reads a Hugging Face `config.json` of model type llama, mistral, qwen2, gemma, phi3, opt
    /// or gpt2. Both the older `rope_theta`/`rope_scaling` keys and the newer `rope_parameters`
    /// are understood; absent optional keys take the defaults of the transformers classes.
    /// - Throws: `FrugalError.missingFile` when absent, `FrugalError.unsupportedArchitecture`
    ///   naming an unknown `model_type`, `FrugalError.malformedFile` naming a missing or
    ///   invalid key.
    public static func fromHuggingFace(configJSON url: URL) throws -> ModelConfiguration {
        let value = try readFile(url).withUnsafeBytes { try JSONValue.parse($0, path: url.path, baseOffset: 0) }
        let root = JSONNode(value: value, file: url.path, path: "")
        guard case .object = root.value else {
            throw FrugalError.malformedFile(path: url.path, problem: "config is not a JSON object")
        }
        let keys = HFConfigKeys(node: root)
        let modelType = try keys.string("model_type")
        switch modelType {
        case "llama", "mistral", "qwen2", "gemma", "phi3": return try rotaryModel(keys, modelType: modelType)
        case "opt": return try opt(keys)
        case "gpt2": return try gpt2(keys)
        default: throw FrugalError.unsupportedArchitecture(path: url.path, found: modelType)
        }
    }

    /// Llama and the families built like it: RMSNorm, gated MLP, rotary positions.
    private static func rotaryModel(_ keys: HFConfigKeys, modelType: String) throws -> ModelConfiguration {
        let isGemma = modelType == "gemma", isQwen2 = modelType == "qwen2"
        let family: Family = isGemma ? .gemma : modelType == "phi3" ? .phi3 : .llama
        let hidden = try keys.positive("hidden_size")
        let heads = try keys.positive("num_attention_heads")
        let kvHeads = try keys.positive("num_key_value_heads", default: heads)
        guard heads % kvHeads == 0 else {
            throw keys.invalid("num_key_value_heads", "\(kvHeads) does not divide num_attention_heads \(heads)")
        }
        let headDim: Int
        if keys.has("head_dim") {
            headDim = try keys.positive("head_dim")
        } else {
            headDim = isGemma ? 256 : try keys.quotient(hidden, heads, "hidden_size")
        }
        let defaultPositions = switch modelType {
        case "mistral": 131_072
        case "qwen2": 32768
        case "gemma": 8192
        case "phi3": 4096
        default: 2048
        }
        let maxPositions = try keys.positive("max_position_embeddings", default: defaultPositions)
        let rope = try RopeKeys(keys, maxPositions: maxPositions)
        // Llama's and Gemma's attention_bias covers q, k, v and o; Qwen2 always biases q, k, v
        // only; Mistral and Phi-3 have no attention biases.
        var llamaBias = false
        if modelType == "llama" || isGemma {
            llamaBias = try keys.bool("attention_bias", default: false)
        }
        var mlpBias = false
        if modelType == "llama" {
            mlpBias = try keys.bool("mlp_bias", default: false)
        }
        let activationKey = keys.has("hidden_activation") ? "hidden_activation" : "hidden_act"
        var activation = try keys.activation(activationKey, default: isGemma ? .geluTanh : .silu)
        if isGemma, activation == .gelu { activation = .geluTanh }  // transformers' rewrite of Gemma's legacy "gelu"

        return ModelConfiguration(
            architecture: family, modelType: modelType,
            vocabSize: try keys.positive("vocab_size"), hiddenSize: hidden,
            intermediateSize: try keys.positive("intermediate_size"),
            layers: try keys.positive("num_hidden_layers"), heads: heads, kvHeads: kvHeads, headDim: headDim,
            maxPositions: maxPositions,
            normEps: Float(try keys.double("rms_norm_eps", default: family == .phi3 ? 1e-5 : 1e-6)),
            normKind: .rms, normWeightOffset: isGemma ? 1 : 0, activation: activation, gatedMLP: true,
            ropeTheta: rope.theta, ropeScaling: rope.scaling, partialRotaryFactor: rope.partialRotaryFactor,
            tiedEmbeddings: try keys.bool("tie_word_embeddings", default: isGemma),
            embeddingScale: isGemma ? Float(Double(hidden).squareRoot()) : 1,
            attentionBias: isQwen2 || llamaBias, outputBias: llamaBias,
            mlpBias: mlpBias,
            bosTokenID: try keys.optionalInt("bos_token_id"), eosTokenIDs: try keys.tokenList("eos_token_id"))
    }

    /// OPT: LayerNorm, ReLU MLP, learned positions offset by 2, optional post-norm blocks and
    /// embedding projections.
    private static func opt(_ keys: HFConfigKeys) throws -> ModelConfiguration {
        let hidden = try keys.positive("hidden_size")
        let heads = try keys.positive("num_attention_heads")
        let preNorm = try keys.bool("do_layer_norm_before", default: true)
        let embedDim = try keys.positive("word_embed_proj_dim", default: hidden)
        let bias = try keys.bool("enable_bias", default: true)
        let removeFinalNorm = try keys.bool("_remove_final_layer_norm", default: false)
        return ModelConfiguration(
            architecture: .opt, modelType: "opt",
            vocabSize: try keys.positive("vocab_size"), hiddenSize: hidden,
            intermediateSize: try keys.positive("ffn_dim"),
            layers: try keys.positive("num_hidden_layers"), heads: heads, kvHeads: heads,
            headDim: try keys.quotient(hidden, heads, "hidden_size"),
            maxPositions: try keys.positive("max_position_embeddings", default: 2048),
            normEps: 1e-5, normKind: .layer,
            activation: try keys.activation("activation_function", default: .relu), gatedMLP: false,
            tiedEmbeddings: try keys.bool("tie_word_embeddings", default: true),
            attentionBias: bias, outputBias: bias, mlpBias: bias,
            learnedPositions: true, positionOffset: 2, normBeforeBlock: preNorm,
            finalNorm: preNorm && !removeFinalNorm,
            wordEmbedProjDim: embedDim == hidden ? nil : embedDim,
            bosTokenID: try keys.optionalInt("bos_token_id"), eosTokenIDs: try keys.tokenList("eos_token_id"))
    }

    /// GPT-2: LayerNorm, GELU (tanh) MLP, learned positions, biases everywhere, tied embeddings.
    private static func gpt2(_ keys: HFConfigKeys) throws -> ModelConfiguration {
        let hidden = try keys.positive("n_embd")
        let heads = try keys.positive("n_head")
        let (fourTimes, overflow) = hidden.multipliedReportingOverflow(by: 4)
        guard !overflow else { throw keys.invalid("n_embd", "\(hidden) is too large") }
        return ModelConfiguration(
            architecture: .gpt2, modelType: "gpt2",
            vocabSize: try keys.positive("vocab_size"), hiddenSize: hidden,
            intermediateSize: try keys.positive("n_inner", default: fourTimes),
            layers: try keys.positive("n_layer"), heads: heads, kvHeads: heads,
            headDim: try keys.quotient(hidden, heads, "n_embd"),
            maxPositions: try keys.positive("n_positions", default: 1024),
            normEps: Float(try keys.double("layer_norm_epsilon", default: 1e-5)), normKind: .layer,
            activation: try keys.activation("activation_function", default: .geluTanh), gatedMLP: false,
            tiedEmbeddings: try keys.bool("tie_word_embeddings", default: true),
            attentionBias: true, outputBias: true, mlpBias: true,
            learnedPositions: true, positionOffset: 0,
            bosTokenID: try keys.optionalInt("bos_token_id"), eosTokenIDs: try keys.tokenList("eos_token_id"))
    }
}

/// The rotary settings of a config: `rope_parameters` (newer transformers) or `rope_scaling`
/// with top-level `rope_theta` and `partial_rotary_factor` (older), as transformers'
/// `standardize_rope_params` merges them.
private struct RopeKeys {
    var theta: Double
    var scaling: ModelConfiguration.RopeScaling?
    var partialRotaryFactor: Double

    init(_ keys: HFConfigKeys, maxPositions: Int) throws {
        let field = keys.has("rope_parameters") ? "rope_parameters" : "rope_scaling"
        let nested = try keys.optionalObject(field)
        theta = try nested?.optionalDouble("rope_theta") ?? keys.double("rope_theta", default: 10_000)
        partialRotaryFactor = try nested?.optionalDouble("partial_rotary_factor")
            ?? keys.double("partial_rotary_factor", default: 1)
        guard theta > 0 else { throw keys.invalid("rope_theta", "must be positive") }
        guard partialRotaryFactor > 0, partialRotaryFactor <= 1 else {
            throw keys.invalid("partial_rotary_factor", "must be in (0, 1]")
        }
        guard let nested else { scaling = nil; return }
        let type = try nested.optionalString("rope_type") ?? nested.optionalString("type") ?? "default"
        switch type {
        case "default":
            scaling = nil
        case "linear":
            scaling = .linear(factor: try nested.positiveDouble("factor"))
        case "llama3":
            let original = try keys.optionalInt("original_max_position_embeddings")
                ?? nested.positive("original_max_position_embeddings", default: maxPositions)
            let low = try nested.positiveDouble("low_freq_factor"), high = try nested.positiveDouble("high_freq_factor")
            guard high > low else { throw nested.invalid("high_freq_factor", "must exceed low_freq_factor") }
            scaling = .llama3(factor: try nested.positiveDouble("factor"), lowFrequencyFactor: low,
                              highFrequencyFactor: high, originalMaxPositions: original)
        default:
            throw keys.invalid(field, "rope type '\(type)' is not supported (default, linear, llama3)")
        }
    }
}

/// Typed reads of the members of a config.json object, each error naming the file and the key
/// path (`rope_parameters.factor`).
private struct HFConfigKeys {
    /// The object.
    let node: JSONNode

    func invalid(_ key: String, _ problem: String) -> FrugalError {
        .malformedFile(path: node.file, problem: "key '\(node[key].path)': \(problem)")
    }

    func missing(_ key: String) -> FrugalError {
        .malformedFile(path: node.file, problem: "missing required key '\(node[key].path)'")
    }

    /// Whether `key` is present and not null.
    func has(_ key: String) -> Bool {
        !node[key].isNull
    }

    private func required(_ key: String) throws -> JSONValue {
        guard has(key) else { throw missing(key) }
        return node[key].value
    }

    func string(_ key: String) throws -> String {
        guard case let .string(text) = try required(key) else { throw invalid(key, "must be a string") }
        return text
    }

    func optionalString(_ key: String) throws -> String? {
        has(key) ? try string(key) : nil
    }

    /// An integer, or nil when absent.
    func optionalInt(_ key: String) throws -> Int? {
        guard has(key) else { return nil }
        guard case let .integer(n) = node[key].value else { throw invalid(key, "must be an integer") }
        return n
    }

    /// A positive integer, required when `default` is nil.
    func positive(_ key: String, default fallback: Int? = nil) throws -> Int {
        guard let n = try optionalInt(key) ?? fallback else { throw missing(key) }
        guard n > 0 else { throw invalid(key, "must be positive, found \(n)") }
        return n
    }

    func optionalDouble(_ key: String) throws -> Double? {
        guard has(key) else { return nil }
        guard let x = try required(key).double else { throw invalid(key, "must be a number") }
        return x
    }

    func double(_ key: String, default fallback: Double) throws -> Double {
        try optionalDouble(key) ?? fallback
    }

    func positiveDouble(_ key: String) throws -> Double {
        guard let x = try optionalDouble(key) else { throw missing(key) }
        guard x > 0 else { throw invalid(key, "must be positive") }
        return x
    }

    func bool(_ key: String, default fallback: Bool) throws -> Bool {
        guard has(key) else { return fallback }
        guard case let .bool(b) = try required(key) else { throw invalid(key, "must be true or false") }
        return b
    }

    /// The member object `key`, or nil when absent or null.
    func optionalObject(_ key: String) throws -> HFConfigKeys? {
        guard has(key) else { return nil }
        guard case .object = node[key].value else { throw invalid(key, "must be an object") }
        return HFConfigKeys(node: node[key])
    }

    /// A token id or list of ids (empty when absent or null).
    func tokenList(_ key: String) throws -> [Int] {
        guard has(key) else { return [] }
        let value = node[key].value
        if case let .array(items) = value {
            return try items.map { item in
                guard case let .integer(id) = item else { throw invalid(key, "must list integers") }
                return id
            }
        }
        guard case let .integer(id) = value else { throw invalid(key, "must be an integer or a list of integers") }
        return [id]
    }

    /// An activation named as transformers names it.
    func activation(_ key: String, default fallback: Activation) throws -> Activation {
        guard let name = try optionalString(key) else { return fallback }
        switch name {
        case "silu", "swish": return .silu
        case "gelu_new", "gelu_pytorch_tanh": return .geluTanh
        case "gelu": return .gelu
        case "relu": return .relu
        default: throw invalid(key, "activation '\(name)' is not supported (silu, gelu, gelu_new, gelu_pytorch_tanh, relu)")
        }
    }

    /// `dividend / divisor` when it divides exactly, else an error naming `key`.
    func quotient(_ dividend: Int, _ divisor: Int, _ key: String) throws -> Int {
        guard dividend % divisor == 0 else { throw invalid(key, "\(dividend) is not a multiple of \(divisor) heads") }
        return dividend / divisor
    }
}
