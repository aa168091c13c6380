// `frugal generate`: talk to a model — chat template, streaming output, tokens/s.
import ArgumentParser
import Foundation
import FrugalCPU
import FrugalEval
import FrugalFormats
import FrugalModels

extension Frugal {
    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Generate text from a prompt, streamed as it comes.",
            discussion: """
            The prompt is wrapped in the model's chat template (detected from the model) unless
            --raw is given. Greedy decoding by default; --temperature > 0 samples.
              frugal generate "What is the capital of France?"
              frugal generate --raw "Best hiking place in Los Angeles for sunset is"
              frugal generate --seed-prompts        # the seed study's two prompts, timed as it reports them
            """)

        /// The prompts of the seed study (EE 599), continued as raw text.
        static let seedPrompts = [
            "Best hiking place in Los Angeles for sunset is",
            "A brief message congratulating the team on the launch:\n\nHi everyone,\n\nI just",
        ]

        @OptionGroup var model: ModelOptions
        @OptionGroup var device: DeviceOptions
        @Option(help: "A PEFT LoRA adapter folder to apply unmerged (what `frugal train` writes to <output>/adapter).")
        var adapter: String?
        @Argument(help: "The user's message (or the raw text to continue with --raw).") var prompt: String?
        @Flag(name: .customLong("seed-prompts"), help: "Run the seed study's prompts (raw) and report the total inference time.")
        var seedPrompts = false
        @Option(help: "A system message (the template's default when omitted).") var system: String?
        @Flag(help: "Continue the prompt as plain text, without the chat template.") var raw = false
        @Option(name: .customLong("max-tokens"), help: "Most tokens to generate.") var maxTokens = 256
        @Option(help: "Sampling temperature; 0 is greedy.") var temperature: Float = 0
        @Option(name: .customLong("top-k"), help: "Sample among the k most likely tokens (0 = all).") var topK = 0
        @Option(name: .customLong("top-p"), help: "Sample within this probability mass (1 = all).") var topP: Float = 1
        @Option(name: .customLong("repetition-penalty"), help: "Penalize tokens already present (1 = off).")
        var repetitionPenalty: Float = 1
        @Option(help: "Random seed for sampling.") var seed: UInt64 = 0

        func validate() throws {
            guard maxTokens > 0 else { throw ValidationError("--max-tokens must be positive") }
            guard temperature >= 0 else { throw ValidationError("--temperature must be ≥ 0") }
            guard topP > 0 && topP <= 1 else { throw ValidationError("--top-p must be in (0, 1]") }
            guard (prompt != nil) != seedPrompts else { throw ValidationError("give a prompt or --seed-prompts, not both or neither") }
        }

        func run() throws {
            let session = try model.chatSession(raw: raw || seedPrompts, adapter: adapter, backend: device.compute().backend)
            let sampling = SamplingOptions(temperature: temperature, topK: topK, topP: topP,
                                           repetitionPenalty: repetitionPenalty, seed: seed)
            let output = FileHandle.standardOutput
            var total = 0.0
            for text in prompt.map({ [$0] }) ?? Self.seedPrompts {
                if seedPrompts { output.write(Data("\(text)".utf8)) }
                let (_, statistics) = session.reply(to: text, system: system, maxTokens: maxTokens, sampling: sampling) {
                    output.write(Data($0.utf8))
                }
                output.write(Data("\n".utf8))
                total += statistics.prefillSeconds + statistics.decodeSeconds
                FileHandle.standardError.write(Data(String(
                    format: "[%d prompt tokens, prefill %.1f tokens/s; %d generated, decode %.1f tokens/s]\n\n",
                    statistics.promptTokens, statistics.prefillTokensPerSecond,
                    statistics.generatedTokens, statistics.decodeTokensPerSecond).utf8))
            }
            if seedPrompts { FileHandle.standardError.write(Data(String(format: "Inference Time: %.2f secs\n", total).utf8)) }
        }
    }
}
