// ModelOptions: the --model option shared by the subcommands, with the default model's path.
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

    /// The model path: the option, or the default model in Frugal's cache.
    var path: String { model ?? Self.defaultModelPath }

    /// SmolLM2-135M-Instruct in the cache that `scripts/setup` fills.
    static var defaultModelPath: String {
        let environment = ProcessInfo.processInfo.environment
        let cache = environment["FRUGAL_CACHE"] ?? (NSHomeDirectory() + "/.cache/frugal")
        return cache + "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    }
}

extension ModelOptions {
    /// Loads the model with its tokenizer and chat template (on `backend`, the CPU by default).
    /// - Parameter raw: ignore the chat template (continue plain text).
    /// - Parameter adapter: a PEFT adapter folder to attach (unmerged).
    func chatSession(raw: Bool = false, adapter: String? = nil, files: ModelFiles? = nil, decoder: Decoder? = nil,
                     backend: Backend? = nil) throws -> ChatSession {
        try withCleanErrors {
            let files = try files ?? ModelFiles(path: path)
            let decoder = try decoder ?? files.decoder(on: backend ?? CPUBackend())
            if let adapter { try PEFTAdapter.load(from: URL(fileURLWithPath: adapter), into: decoder) }
            return ChatSession(decoder: decoder, tokenizer: try files.tokenizer(),
                               template: raw ? nil : files.chatTemplate,
                               defaultSystemPrompt: ChatTemplate.defaultSystemPrompt(in: files.chatTemplateSource),
                               eosTokenIDs: files.configuration.eosTokenIDs)
        }
    }
}
