// The `frugal` command: fine-tune, measure and run language models on one GPU or a CPU.
import ArgumentParser

@main
struct Frugal: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "frugal",
        abstract: "Fine-tune language models on one GPU or a CPU, and measure what it costs.",
        discussion: """
        With no model given, commands use SmolLM2-135M-Instruct, which `scripts/setup` fetches
        into ~/.cache/frugal/models (or $FRUGAL_CACHE/models).
        """,
        subcommands: [Train.self, Generate.self, Eval.self, Export.self, Info.self, Devices.self, Bench.self, Plan.self, Sweep.self, Report.self, GPUCheck.self])

    /// Checks the CPU's instruction set before any command runs.
    static func main() {
        InstructionSetCheck.run()
        main(nil)
    }
}
