// `frugal export`: a trained adapter as a PEFT folder, or merged into the model as a Hugging Face folder.
import ArgumentParser
import Foundation
import FrugalCore
import FrugalCPU
import FrugalModels

extension Frugal {
    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Export a LoRA adapter for Hugging Face PEFT, or merge it into the model's weights.",
            discussion: """
            peft: adapter_config.json + adapter_model.safetensors, loadable with
                  PeftModel.from_pretrained(base, DIR).
            merged-safetensors: a Hugging Face model folder (config.json, model.safetensors,
                  tokenizer files) with every adapter folded into its weight; quantized GGUF
                  weights are widened to --dtype. Without --adapter, the model is converted as is.
              frugal export --model m.gguf --adapter out/adapter --format merged-safetensors --output merged/
            """)

        enum Format: String, ExpressibleByArgument, CaseIterable {
            case peft
            case mergedSafetensors = "merged-safetensors"
        }

        @OptionGroup var model: ModelOptions
        @Option(help: "A PEFT adapter folder (adapter_config.json, adapter_model.safetensors), as `frugal train` writes.")
        var adapter: String?
        @Option(help: "peft or merged-safetensors.") var format: Format
        @Option(help: "The folder to write (created when needed).") var output: String
        @Option(help: "Weight dtype of a merged export: f32, bf16 or f16.") var dtype = "f32"

        func validate() throws {
            guard ["f32", "bf16", "f16"].contains(dtype) else { throw ValidationError("--dtype must be f32, bf16 or f16") }
            if model.quantization.quantize != nil {
                throw ValidationError("--quantize does not apply to export: the adapter merges into the weights as stored")
            }
            if format == .peft && adapter == nil { throw ValidationError("--format peft needs --adapter") }
            if format == .peft && dtype != "f32" { throw ValidationError("PEFT adapters are written in f32; --dtype applies to merged exports") }
            if let adapter, URL(fileURLWithPath: adapter).standardized == URL(fileURLWithPath: output).standardized {
                throw ValidationError("--output must differ from --adapter")
            }
        }

        func run() throws {
            let files = try withCleanErrors { try ModelFiles(path: model.path) }
            let decoder = try withCleanErrors { try files.decoder(on: CPUBackend()) }
            var adapters = 0
            if let adapter {
                let parameters = try withCleanErrors { try PEFTAdapter.load(from: URL(fileURLWithPath: adapter), into: decoder) }
                adapters = parameters.parameters.count / 2
                print("adapter      \(adapter): \(adapters) projections, \(formatCount(parameters.count)) parameters")
            }
            let folder = URL(fileURLWithPath: output)
            switch format {
            case .peft:
                try withCleanErrors { try PEFTAdapter.export(decoder: decoder, baseModel: files.path, to: folder) }
                print("PEFT adapter \(folder.path)")
            case .mergedSafetensors:
                let summary = try withCleanErrors {
                    try MergedExport.write(decoder: decoder, files: files, to: folder, dtype: DType(rawValue: dtype)!)
                }
                print("merged model \(folder.path): \(summary.tensors) tensors, \(formatBytes(summary.bytes)) of \(dtype)"
                      + (adapters == 0 ? " (no adapter: the model as is)" : ""))
                print("files        \(summary.files.joined(separator: ", "))")
                for note in summary.notes { print("note         \(note)") }
            }
        }
    }
}
