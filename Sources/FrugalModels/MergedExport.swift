// MergedExport: a decoder with its LoRA adapters folded into the weights, as a Hugging Face folder.
import Foundation
import FrugalCore
import FrugalFormats

/// Writes a decoder as a Hugging Face model folder, every enabled LoRA adapter merged into its
/// projection (`W + s·B·A`), so `AutoModelForCausalLM.from_pretrained(folder)` (or Frugal) loads
/// the adapted model with no adapter code.
///
/// - Weights: `model.safetensors` (shards and `model.safetensors.index.json` above
///   `shardBytes`), named as the family names them in Hugging Face checkpoints: fused
///   projections (Phi-3's `qkv_proj`, `gate_up_proj`, GPT-2's `c_attn`) concatenated again,
///   GPT-2's `Conv1D` weights transposed back to (inputs, outputs), a tied head not written.
///   Quantized (GGUF) weights are widened to `dtype`; rotary rows are already in HF order.
/// - `config.json`: the source's, with `torch_dtype` set to `dtype`, for a Hugging Face
///   folder; for a GGUF file, one written from its configuration (`LlamaForCausalLM` or
///   `Qwen2ForCausalLM`) plus `generation_config.json`.
/// - Tokenizer: the source's tokenizer files, copied; for a GGUF file, `tokenizer_config.json`
///   (special tokens, chat template) and, for byte-level BPE tokenizers (`tokenizer.ggml.model`
///   `gpt2`: SmolLM, Llama 3, Qwen 2, GPT-2), `tokenizer.json`. SentencePiece-style GGUF
///   tokenizers are not converted (the summary says so).
public enum MergedExport {
    /// What `write` wrote.
    public struct Summary: Sendable {
        /// File names written into the folder.
        public var files: [String] = []
        /// Tensors and bytes in the weight files.
        public var tensors = 0
        public var bytes = 0
        /// What was left out, and why.
        public var notes: [String] = []
    }

    /// Writes the merged model into `folder` (created when needed).
    /// - Parameters:
    ///   - decoder: the model, with adapters attached (or none: then the base is written as is).
    ///   - files: where the model came from (its config and tokenizer are carried over).
    ///   - dtype: f32, bf16 or f16 for every weight.
    ///   - shardBytes: largest weight file before the weights are split into shards.
    /// - Throws: `FrugalError.invalidArgument` for another dtype, or a GGUF model of a family
    ///   that has no Hugging Face config here; write errors.
    @discardableResult
    public static func write(decoder: Decoder, files: ModelFiles, to folder: URL, dtype: DType = .f32,
                             shardBytes: Int = 5_000_000_000) throws -> Summary {
        guard [.f32, .bf16, .f16].contains(dtype) else {
            throw FrugalError.invalidArgument("merged export writes f32, bf16 or f16, not \(dtype.rawValue)")
        }
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        var summary = Summary()
        try writeWeights(plan(decoder), dtype: dtype, shardBytes: shardBytes, to: folder, summary: &summary)
        if let gguf = files.gguf {
            try writeJSON(huggingFaceConfig(files.configuration, dtype: dtype), "config.json", folder, &summary)
            try writeJSON(generationConfig(files.configuration), "generation_config.json", folder, &summary)
            try writeTokenizer(gguf, configuration: files.configuration, to: folder, summary: &summary)
        } else {
            let source = URL(fileURLWithPath: files.path)
            var config = try readJSONObject(source.appendingPathComponent("config.json"))
            config[config["dtype"] != nil ? "dtype" : "torch_dtype"] = torchName(dtype)  // transformers 5 : 4
            config.removeValue(forKey: "quantization_config")
            try writeJSON(config, "config.json", folder, &summary)
            for name in copiedFiles where FileManager.default.fileExists(atPath: source.appendingPathComponent(name).path) {
                let data = try Data(contentsOf: source.appendingPathComponent(name))
                try AtomicFile.write(data, to: folder.appendingPathComponent(name))
                summary.files.append(name)
            }
            if !summary.files.contains("tokenizer.json") && !summary.files.contains("tokenizer.model") {
                summary.notes.append("the source folder has no tokenizer files: none copied")
            }
        }
        return summary
    }

    /// Files of a Hugging Face folder that the merged folder carries over unchanged.
    static let copiedFiles = [
        "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
        "added_tokens.json", "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json",
    ]

    // MARK: - Weights

    /// One tensor to write: its Hugging Face name, shape, and how to compute its values.
    struct PlannedTensor {
        let name: String
        let shape: Shape
        let values: () -> [Float]
    }

    /// Every tensor of the Hugging Face checkpoint, in model order, adapters merged.
    static func plan(_ decoder: Decoder) -> [PlannedTensor] {
        let naming = TensorNaming.huggingFace(decoder.configuration.architecture)
        let w = decoder.weights, backend = decoder.backend
        var plan: [PlannedTensor] = []
        func tensor(_ name: String, _ t: Tensor) {
            plan.append(PlannedTensor(name: name, shape: t.shape, values: { backend.download(t) }))
        }
        func norm(_ name: String, _ n: Norm) {
            tensor(name + ".weight", n.weight)
            if let b = n.bias { tensor(name + ".bias", b) }
        }
        /// A projection, or several concatenated by rows, as stored (transposed for GPT-2).
        func linear(_ name: String, _ parts: [Linear]) {
            let inputs = parts[0].inputs, outputs = parts.reduce(0) { $0 + $1.outputs }
            let transposed = naming.transposedLinears
            plan.append(PlannedTensor(name: name + ".weight", shape: transposed ? [inputs, outputs] : [outputs, inputs]) {
                let merged = parts.flatMap { merge($0, backend: backend) }
                return transposed ? transpose(merged, rows: outputs, columns: inputs) : merged
            })
            let biases = parts.compactMap(\.bias)
            if !biases.isEmpty {
                precondition(biases.count == parts.count, "'\(name)': some fused parts have a bias, some not")
                plan.append(PlannedTensor(name: name + ".bias", shape: [outputs]) { biases.flatMap { backend.download($0) } })
            }
        }

        tensor(naming.tokenEmbedding + ".weight", w.tokenEmbedding)
        if let p = w.positionEmbedding, let name = naming.positionEmbedding { tensor(name + ".weight", p) }
        if let p = w.projectIn, let name = naming.projectIn { linear(name, [p]) }
        for (i, block) in w.blocks.enumerated() {
            norm(naming.attentionNorm(i), block.attentionNorm)
            if let fused = naming.fusedQKV {
                linear(fused(i), [block.query, block.key, block.value])
            } else {
                linear(naming.query(i), [block.query])
                linear(naming.key(i), [block.key])
                linear(naming.value(i), [block.value])
            }
            linear(naming.output(i), [block.output])
            norm(naming.mlpNorm(i), block.mlpNorm)
            if let fused = naming.fusedGateUp, let gate = block.gate {
                linear(fused(i), [gate, block.up])
            } else {
                if let gate = block.gate, let name = naming.gate { linear(name(i), [gate]) }
                linear(naming.up(i), [block.up])
            }
            linear(naming.down(i), [block.down])
        }
        if let n = w.finalNorm, let name = naming.finalNorm { norm(name, n) }
        if let p = w.projectOut, let name = naming.projectOut { linear(name, [p]) }
        if w.head.storage !== w.tokenEmbedding.storage || w.head.byteOffset != w.tokenEmbedding.byteOffset,
           let name = naming.head {
            tensor(name + ".weight", w.head)
        }
        return plan
    }

    /// `W + s·B·A` (outputs, inputs) as floats; `W` when no enabled adapter is attached.
    static func merge(_ linear: Linear, backend: Backend) -> [Float] {
        var weight = backend.download(linear.weight)
        guard let lora = linear.lora, lora.enabled else { return weight }
        // B·A = linear(x: B (outputs, rank), w: Aᵀ (inputs, rank)).
        let a = backend.download(lora.a)
        let aT = transpose(a, rows: lora.rank, columns: linear.inputs)
        let aTensor = aT.withUnsafeBytes { backend.upload($0, [linear.inputs, lora.rank], .f32, .workspace) }
        let product = backend.zeros([linear.outputs, linear.inputs], .f32, .workspace)
        backend.linear(product, lora.b, aTensor, bias: nil)
        let delta = backend.download(product)
        for i in weight.indices { weight[i] += lora.scale * delta[i] }
        return weight
    }

    /// A row-major (rows, columns) matrix as (columns, rows).
    static func transpose(_ values: [Float], rows: Int, columns: Int) -> [Float] {
        [Float](unsafeUninitializedCapacity: values.count) { out, count in
            for r in 0..<rows {
                for c in 0..<columns { out[c * rows + r] = values[r * columns + c] }
            }
            count = values.count
        }
    }

    /// Writes the planned tensors as one file, or as shards of at most `shardBytes` with an index.
    private static func writeWeights(_ plan: [PlannedTensor], dtype: DType, shardBytes: Int, to folder: URL,
                                     summary: inout Summary) throws {
        let size = { (t: PlannedTensor) in t.shape.count * dtype.blockBytes }
        var shards: [[PlannedTensor]] = [[]]
        var current = 0
        for t in plan {
            if current > 0 && current + size(t) > shardBytes {
                shards.append([])
                current = 0
            }
            shards[shards.count - 1].append(t)
            current += size(t)
        }
        let names = shards.count == 1 ? ["model.safetensors"]
            : shards.indices.map { String(format: "model-%05d-of-%05d.safetensors", $0 + 1, shards.count) }
        // A stale file of the other layout would confuse loaders.
        let stale = shards.count == 1 ? "model.safetensors.index.json" : "model.safetensors"
        try? FileManager.default.removeItem(at: folder.appendingPathComponent(stale))
        var weightMap: [String: String] = [:]
        for (shard, name) in zip(shards, names) {
            let tensors = try shard.map { t in
                let values = t.values()
                precondition(values.count == t.shape.count, "'\(t.name)': \(values.count) values for \(t.shape)")
                weightMap[t.name] = name
                return (name: t.name, dtype: dtype, shape: t.shape, bytes: try SafeTensorsWriter.bytes(of: values, as: dtype))
            }
            try SafeTensorsWriter.write(tensors, metadata: ["format": "pt"], to: folder.appendingPathComponent(name))
            summary.files.append(name)
            summary.tensors += tensors.count
            summary.bytes += tensors.reduce(0) { $0 + $1.bytes.count }
        }
        if shards.count > 1 {
            let index: [String: Any] = ["metadata": ["total_size": summary.bytes], "weight_map": weightMap]
            try writeJSON(index, "model.safetensors.index.json", folder, &summary)
        }
    }

    // MARK: - Config

    /// PyTorch's name of a dtype, as config.json records it.
    static func torchName(_ dtype: DType) -> String {
        switch dtype {
        case .bf16: "bfloat16"
        case .f16: "float16"
        default: "float32"
        }
    }

    /// A float as its shortest decimal (1e-05, not 9.999999747378752e-06).
    private static func decimal(_ x: Float) -> Double { Double("\(x)") ?? Double(x) }

    /// A Hugging Face `config.json` for a Llama-shaped model (from a GGUF file): Llama, or Qwen 2.
    /// - Throws: `FrugalError.invalidArgument` for another family.
    static func huggingFaceConfig(_ c: ModelConfiguration, dtype: DType) throws -> [String: Any] {
        guard c.architecture == .llama, c.gatedMLP, c.activation == .silu, !c.learnedPositions, c.partialRotaryFactor == 1 else {
            throw FrugalError.invalidArgument("no Hugging Face config for a \(c.modelType) model read from GGUF (Llama and Qwen 2 only)")
        }
        let qwen2 = c.modelType == "qwen2"
        guard c.attentionBias == qwen2, !c.outputBias, !c.mlpBias else {
            throw FrugalError.invalidArgument("no Hugging Face config for a \(c.modelType) model with these biases")
        }
        var config: [String: Any] = [
            "architectures": [qwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM"], "model_type": qwen2 ? "qwen2" : "llama",
            "vocab_size": c.vocabSize, "hidden_size": c.hiddenSize, "intermediate_size": c.intermediateSize,
            "num_hidden_layers": c.layers, "num_attention_heads": c.heads, "num_key_value_heads": c.kvHeads,
            "max_position_embeddings": c.maxPositions, "rms_norm_eps": decimal(c.normEps), "hidden_act": "silu",
            "rope_theta": c.ropeTheta, "tie_word_embeddings": c.tiedEmbeddings, "torch_dtype": torchName(dtype),
            "attention_dropout": 0.0, "initializer_range": 0.02, "use_cache": true,
        ]
        if qwen2 {
            config["use_sliding_window"] = false
        } else {
            config["head_dim"] = c.headDim
            config["attention_bias"] = false
            config["mlp_bias"] = false
        }
        if qwen2 && c.headDim * c.heads != c.hiddenSize {
            throw FrugalError.invalidArgument("Qwen 2 configs have no head_dim: heads × head dim must equal the hidden size")
        }
        switch c.ropeScaling {
        case nil: break
        case let .linear(factor):
            config["rope_scaling"] = ["rope_type": "linear", "factor": factor]
        case let .llama3(factor, low, high, original):
            config["rope_scaling"] = ["rope_type": "llama3", "factor": factor, "low_freq_factor": low,
                                      "high_freq_factor": high, "original_max_position_embeddings": original]
        }
        if let bos = c.bosTokenID { config["bos_token_id"] = bos }
        if c.eosTokenIDs.count == 1 { config["eos_token_id"] = c.eosTokenIDs[0] }
        if c.eosTokenIDs.count > 1 { config["eos_token_id"] = c.eosTokenIDs }
        return config
    }

    /// `generation_config.json`: the special tokens generation stops at.
    static func generationConfig(_ c: ModelConfiguration) -> [String: Any] {
        var config: [String: Any] = [:]
        if let bos = c.bosTokenID { config["bos_token_id"] = bos }
        if !c.eosTokenIDs.isEmpty { config["eos_token_id"] = c.eosTokenIDs.count == 1 ? c.eosTokenIDs[0] as Any : c.eosTokenIDs }
        return config
    }

    // MARK: - GGUF tokenizer

    /// Writes `tokenizer_config.json`, and `tokenizer.json` when the GGUF tokenizer is byte-level BPE.
    private static func writeTokenizer(_ gguf: GGUFFile, configuration: ModelConfiguration, to folder: URL,
                                       summary: inout Summary) throws {
        let tokens = gguf["tokenizer.ggml.tokens"]?.stringArray ?? []
        func token(_ key: String) -> String? {
            guard let id = gguf["tokenizer.ggml.\(key)"]?.int, tokens.indices.contains(id) else { return nil }
            return tokens[id]
        }
        let model = gguf["tokenizer.ggml.model"]?.string
        let addBOS = gguf["tokenizer.ggml.add_bos_token"]?.bool ?? (model == "llama")
        var config: [String: Any] = [
            "add_bos_token": addBOS, "add_eos_token": gguf["tokenizer.ggml.add_eos_token"]?.bool ?? false,
            "clean_up_tokenization_spaces": false, "model_max_length": configuration.maxPositions,
        ]
        for (field, key) in [("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"), ("unk_token", "unknown_token_id"),
                             ("pad_token", "padding_token_id")] {
            if let text = token(key) { config[field] = text }
        }
        if let template = gguf["tokenizer.chat_template"]?.string { config["chat_template"] = template }
        do {
            let json = try tokenizerJSON(gguf, addBOS: addBOS)
            try writeJSON(json, "tokenizer.json", folder, &summary)
            config["tokenizer_class"] = "PreTrainedTokenizerFast"
        } catch let FrugalError.invalidArgument(reason) {
            summary.notes.append("tokenizer.json not written: \(reason); tokenizer_config.json has the special tokens and chat template")
        }
        try writeJSON(config, "tokenizer_config.json", folder, &summary)
    }

    /// The split expressions of byte-level pre-tokenizer types, as the Hugging Face tokenizers write them.
    private static let llama3Split =
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    private static let qwen2Split =
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    /// A Hugging Face `tokenizer.json` equivalent to a GGUF byte-level BPE tokenizer (as Frugal
    /// and llama.cpp read it).
    /// - Throws: `FrugalError.invalidArgument` saying why it cannot be written (a SentencePiece
    ///   tokenizer, an unknown pre-tokenizer type, missing arrays).
    static func tokenizerJSON(_ gguf: GGUFFile, addBOS: Bool) throws -> [String: Any] {
        guard let model = gguf["tokenizer.ggml.model"]?.string else {
            throw FrugalError.invalidArgument("the GGUF file has no tokenizer.ggml.model")
        }
        guard model == "gpt2" else {
            throw FrugalError.invalidArgument("the GGUF tokenizer is '\(model)' (SentencePiece-style): only byte-level BPE ('gpt2') is converted")
        }
        guard let tokens = gguf["tokenizer.ggml.tokens"]?.stringArray, let merges = gguf["tokenizer.ggml.merges"]?.stringArray else {
            throw FrugalError.invalidArgument("the GGUF file has no tokenizer.ggml.tokens or merges")
        }
        let types = gguf["tokenizer.ggml.token_type"]?.intArray ?? []
        let byteLevel: (Bool) -> [String: Any] = { regex in
            ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": regex]
        }
        func split(_ pattern: String) -> [String: Any] {
            ["type": "Split", "pattern": ["Regex": pattern], "behavior": "Isolated", "invert": false]
        }
        var normalizer: Any = NSNull()
        var ignoreMerges = false
        let preTokenizer: [String: Any]
        switch gguf["tokenizer.ggml.pre"]?.string ?? "default" {
        case "default", "gpt2", "gpt-2":
            preTokenizer = byteLevel(true)
        case "smollm", "starcoder", "refact":
            preTokenizer = ["type": "Sequence", "pretokenizers": [["type": "Digits", "individual_digits": true], byteLevel(true)]]
        case "llama-bpe", "llama3", "smaug-bpe":
            preTokenizer = ["type": "Sequence", "pretokenizers": [split(llama3Split), byteLevel(false)]]
            ignoreMerges = true
        case "qwen2", "deepseek-r1-qwen":
            preTokenizer = ["type": "Sequence", "pretokenizers": [split(qwen2Split), byteLevel(false)]]
            normalizer = ["type": "NFC"]
        case let other:
            throw FrugalError.invalidArgument("the GGUF pre-tokenizer type '\(other)' has no tokenizer.json equivalent here")
        }
        var vocabulary: [String: Int] = [:]
        for (id, token) in tokens.enumerated() where vocabulary[token] == nil { vocabulary[token] = id }
        var pairs: [[String]] = []
        pairs.reserveCapacity(merges.count)
        for merge in merges {
            let parts = merge.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2 else { throw FrugalError.invalidArgument("merge '\(merge)' is not 'left right'") }
            pairs.append([String(parts[0]), String(parts[1])])
        }
        // Control (3) and user-defined (4) tokens are matched in the text before BPE.
        var added: [[String: Any]] = []
        for (id, token) in tokens.enumerated() where id < types.count && (types[id] == 3 || types[id] == 4) && !token.isEmpty {
            added.append(["id": id, "content": token, "single_word": false, "lstrip": false, "rstrip": false,
                          "normalized": false, "special": types[id] == 3])
        }
        var postProcessor: [String: Any] = ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true]
        if addBOS, let id = gguf["tokenizer.ggml.bos_token_id"]?.int, tokens.indices.contains(id) {
            let bos = tokens[id]
            let special: (Int) -> [String: Any] = { ["SpecialToken": ["id": bos, "type_id": $0]] }
            let sequence: (String, Int) -> [String: Any] = { ["Sequence": ["id": $0, "type_id": $1]] }
            postProcessor = ["type": "TemplateProcessing", "single": [special(0), sequence("A", 0)],
                             "pair": [special(0), sequence("A", 0), special(1), sequence("B", 1)],
                             "special_tokens": [bos: ["id": bos, "ids": [id], "tokens": [bos]]]]
        }
        return [
            "version": "1.0", "truncation": NSNull(), "padding": NSNull(), "added_tokens": added,
            "normalizer": normalizer, "pre_tokenizer": preTokenizer, "post_processor": postProcessor,
            "decoder": ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true],
            "model": ["type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": NSNull(),
                      "end_of_word_suffix": NSNull(), "fuse_unk": false, "byte_fallback": false,
                      "ignore_merges": ignoreMerges, "vocab": vocabulary, "merges": pairs] as [String: Any],
        ]
    }

    // MARK: - JSON files

    private static func readJSONObject(_ url: URL) throws -> [String: Any] {
        guard FileManager.default.fileExists(atPath: url.path) else { throw FrugalError.missingFile(path: url.path, what: "config.json") }
        guard let object = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any] else {
            throw FrugalError.malformedFile(path: url.path, problem: "not a JSON object")
        }
        return object
    }

    private static func writeJSON(_ object: [String: Any], _ name: String, _ folder: URL, _ summary: inout Summary) throws {
        let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        try AtomicFile.write(data, to: folder.appendingPathComponent(name))
        summary.files.append(name)
    }
}
