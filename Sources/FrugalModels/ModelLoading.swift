// ModelLoading: opens a GGUF file or a Hugging Face folder as a decoder on a backend.
import FrugalCore
import FrugalFormats
import Foundation

/// What a model path holds, before any weight is copied.
public struct ModelFiles {
    /// The path as given.
    public let path: String
    public let configuration: ModelConfiguration
    /// The GGUF file, when the model is one (its metadata also holds tokenizer and template).
    public let gguf: GGUFFile?
    let source: WeightSource
    let naming: TensorNaming

    /// Reads the configuration and indexes the weights of a GGUF file or a Hugging Face folder.
    /// - Throws: `FrugalError.missingFile` for a path that does not exist or a folder without
    ///   `config.json`, `FrugalError.unsupportedArchitecture`, or the format reader's errors.
    public init(path: String) throws {
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) else {
            throw FrugalError.missingFile(path: path, what: "model (no such file or folder)")
        }
        self.path = path
        if isFolder.boolValue {
            let folder = URL(fileURLWithPath: path)
            let config = folder.appendingPathComponent("config.json")
            guard FileManager.default.fileExists(atPath: config.path) else {
                throw FrugalError.missingFile(path: path, what: "config.json")
            }
            configuration = try ModelConfiguration.fromHuggingFace(configJSON: config)
            source = try SafeTensorsSource(folder: folder)
            naming = TensorNaming.huggingFace(configuration.architecture)
            gguf = nil
        } else {
            let file = try GGUFFile(path: path)
            configuration = try ModelConfiguration.fromGGUF(file, hasOutputTensor: file.tensor("output.weight") != nil)
            source = GGUFSource(file: file)
            // llama.cpp stores llama's q/k rows in the interleaved rotary order; qwen2's are as in HF.
            naming = TensorNaming.gguf(interleavedRotary: file.architecture == "llama")
            gguf = file
        }
    }

    /// Parameter count and bytes of the stored weights, by dtype.
    public func storedTensors() throws -> [(name: String, dtype: DType, shape: Shape)] {
        try source.tensorNames.sorted().compactMap { name in
            guard let t = try source.tensor(name) else { return nil }
            return (name, t.dtype, t.shape)
        }
    }

    /// Copies the weights onto `backend` and returns the decoder.
    /// - Parameters:
    ///   - trainable: load every weight as f32 `trainable` memory for a full fine-tune;
    ///     otherwise weights stay as stored (f16, bf16 or packed) in `weights` memory.
    ///   - trainableDType: with `trainable`, f32, or bf16 under pure bf16 (each weight rounded to
    ///     nearest even on the host, one tensor at a time).
    ///   - quantize: a packed type (`nf4` or `q8_0`) for the frozen block projections, quantized on
    ///     the host one tensor at a time; those whose rows are not whole blocks stay as stored
    ///     (`BaseQuantization` counts them).
    /// - Throws: `FrugalError.invalidArgument` for `quantize` with `trainable` (a full fine-tune
    ///   trains f32 weights) or a type that cannot be quantized to; the loaders' errors.
    public func decoder(on backend: Backend, trainable: Bool = false, trainableDType: DType = .f32,
                        quantize: DType? = nil) throws -> Decoder {
        guard trainableDType == .f32 || trainableDType == .bf16 else {
            throw FrugalError.invalidArgument("trainable weights are f32 or bf16, not \(trainableDType.rawValue)")
        }
        if let quantize {
            try BaseQuantization.check(quantize)
            guard !trainable else {
                throw FrugalError.invalidArgument("a full fine-tune trains every weight in f32: quantize a frozen base (LoRA) only")
            }
        }
        let weights = try WeightLoader(source: source, naming: naming, configuration: configuration, backend: backend,
                                       trainable: trainable, trainableDType: trainableDType, quantize: quantize).load()
        return Decoder(configuration: configuration, weights: weights, backend: backend,
                       inverseFrequencies: try ggufRopeFrequencies())
    }

    /// Llama 3.1 GGUF files carry their rotary scaling as `rope_freqs.weight`: one divisor per
    /// frequency, applied to the plain frequencies.
    private func ggufRopeFrequencies() throws -> [Float]? {
        guard let gguf, gguf.tensor("rope_freqs.weight") != nil else { return nil }
        let factors = try gguf.dequantized("rope_freqs.weight")
        let plain = configuration.ropeInverseFrequencies()
        guard factors.count == plain.count else {
            throw FrugalError.malformedFile(path: path, problem: "rope_freqs.weight has \(factors.count) values, expected \(plain.count)")
        }
        return zip(plain, factors).map { $0 / $1 }
    }
}

// MARK: - Tokenizer and chat template

extension ModelFiles {
    /// The model's tokenizer: from the GGUF metadata, or the folder's `tokenizer.json`.
    /// - Throws: `FrugalError.missingFile` naming the folder when it has no tokenizer.json.
    public func tokenizer() throws -> Tokenizer {
        if let gguf { return try Tokenizer(gguf: gguf) }
        let url = URL(fileURLWithPath: path).appendingPathComponent("tokenizer.json")
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw FrugalError.missingFile(path: path, what: "tokenizer.json (the model folder has no tokenizer)")
        }
        return try Tokenizer(tokenizerJSON: url)
    }

    /// The Jinja chat template the model ships (GGUF `tokenizer.chat_template`, or
    /// `chat_template` in the folder's tokenizer_config.json), when it has one.
    public var chatTemplateSource: String? {
        if let gguf { return gguf["tokenizer.chat_template"]?.string }
        let url = URL(fileURLWithPath: path).appendingPathComponent("tokenizer_config.json")
        guard let data = try? Data(contentsOf: url),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        if let text = object["chat_template"] as? String { return text }
        let named = object["chat_template"] as? [[String: Any]]
        return named?.first { $0["name"] as? String == "default" }?["template"] as? String
    }

    /// The chat format of the model, when its template (or architecture) tells.
    public var chatTemplate: ChatTemplate? {
        ChatTemplate.detect(from: chatTemplateSource, architecture: gguf?.architecture ?? configuration.modelType)
    }
}
