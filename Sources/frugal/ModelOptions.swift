// ModelOptions: the --model option shared by the subcommands, with the default model's path.
import ArgumentParser
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
