// ModelOptions: the --model and --quantize options shared by the subcommands, with the default
// model's path.
import ArgumentParser
import FrugalCore
import FrugalCPU
import FrugalEval
import FrugalFormats
import FrugalModels
import Foundation

/// Which model to load.
struct ModelOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "A GGUF file or a Hugging Face model folder (config.json, *.safetensors, tokenizer.json).",
        valueName: "path"))
    var model: String?
    @OptionGroup var quantization: QuantizeOptions

    /// The model path: the option, or the default model in Frugal's cache.
    var path: String { model ?? Self.defaultModelPath }

    /// SmolLM2-135M-Instruct in the cache that `scripts/setup` fills.
    static var defaultModelPath: String {
        let environment = ProcessInfo.processInfo.environment
        let cache = environment["FRUGAL_CACHE"] ?? (NSHomeDirectory() + "/.cache/frugal")
        return cache + "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    }
}

/// How to store a frozen base's projections: `--quantize`.
struct QuantizeOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Store the frozen base's block projections packed, quantized on load: nf4 or q8_0.",
        discussion: """
        nf4 is QLoRA's 4-bit NormalFloat with double-quantized scales: 4.19 bits per value, 7.6× \
        less than f32 and 3.8× less than bf16. q8_0 is ggml's 8-bit blocks: 8.5 bits per value. \
        q, k, v, o, gate, up and down are quantized one tensor at a time on the host; embeddings, \
        head, norms and biases stay as stored, and so does a projection whose input width is not \
        a whole number of blocks (256 values for nf4, 32 for q8_0: SmolLM2-135M's width 576 \
        leaves all but its MLP down projections as stored under nf4) or that is stored as small \
        already (a q4 GGUF asked for q8_0). Costs: rounding error in the frozen weights (relative \
        RMS about 9% for nf4, 0.5% for q8_0, on normal values; LoRA trains around it), and every \
        step widens the packed weights to f32 a tile at a time. Not with --method full.
        """,
        valueName: "nf4|q8_0"))
    var quantize: String?

    /// The packed type `--quantize` names, or nil to keep the weights as stored.
    var dtype: DType? { quantize.flatMap(DType.init(rawValue:)) }

    func validate() throws {
        guard let quantize else { return }
        guard let dtype, BlockQuantization.quantizableTypes.contains(dtype) else {
            throw ValidationError("unknown --quantize '\(quantize)' (nf4 or q8_0)")
        }
    }

    /// One line saying how many block projections `decoder` holds quantized and how many stay as
    /// stored, or nil without --quantize.
    func summary(_ decoder: Decoder) -> String? {
        guard let dtype else { return nil }
        let counts = BaseQuantization(decoder.weights, dtype: dtype)
        var line = "quantized base: \(counts.quantized) block projections as \(dtype.rawValue)"
        if counts.leftAsStored > 0 {
            line += ", \(counts.leftAsStored) left as stored (input width not a multiple of \(dtype.blockSize), or stored as small)"
        }
        return line
    }
}

extension ModelOptions {
    /// Loads `files` onto `backend` (every weight trainable f32, or bf16 under pure bf16, for a full fine-tune), with the
    /// projections quantized as `--quantize` asks, and says on standard error what was quantized.
    func decoder(_ files: ModelFiles, on backend: Backend, trainable: Bool = false, trainableDType: DType = .f32) throws -> Decoder {
        let decoder = try withCleanErrors {
            try files.decoder(on: backend, trainable: trainable, trainableDType: trainableDType, quantize: quantization.dtype)
        }
        if let line = quantization.summary(decoder) { FileHandle.standardError.write(Data((line + "\n").utf8)) }
        return decoder
    }

    /// Loads the model with its tokenizer and chat template (on `backend`, the CPU by default).
    /// - Parameter raw: ignore the chat template (continue plain text).
    /// - Parameter adapter: a PEFT adapter folder to attach (unmerged).
    func chatSession(raw: Bool = false, adapter: String? = nil, files: ModelFiles? = nil, decoder: Decoder? = nil,
                     backend: Backend? = nil) throws -> ChatSession {
        try withCleanErrors {
            let files = try files ?? ModelFiles(path: path)
            let decoder = try decoder ?? self.decoder(files, on: backend ?? CPUBackend())
            if let adapter { try PEFTAdapter.load(from: URL(fileURLWithPath: adapter), into: decoder) }
            return ChatSession(decoder: decoder, tokenizer: try files.tokenizer(),
                               template: raw ? nil : files.chatTemplate,
                               defaultSystemPrompt: ChatTemplate.defaultSystemPrompt(in: files.chatTemplateSource),
                               eosTokenIDs: files.configuration.eosTokenIDs)
        }
    }
}
