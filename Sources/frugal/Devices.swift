// `frugal devices` and `frugal gpu-check`: what compute Frugal finds, and the GPU checked against the CPU.
import ArgumentParser
import Foundation
import FrugalCore
import FrugalCPU
import FrugalCUDA
import FrugalModels
import FrugalTraining

extension Frugal {
    struct Devices: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the GPUs and CUDA libraries Frugal finds (or say plainly why there is no GPU), and the CPU backend.")

        @Flag(help: "Print the report as JSON.") var json = false

        func run() throws {
            let report = CUDADeviceReport.probe()
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(report), as: UTF8.self))
                return
            }
            print(report.description)
            let blas = CPUBackend().blas
            print("CPU: \(ProcessInfo.processInfo.activeProcessorCount) cores, BLAS \(blas.libraryPath ?? "not found (Swift fallback GEMM)")")
        }
    }

    struct GPUCheck: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "gpu-check",
            abstract: "Check the CUDA backend against the CPU: every op forward and backward, whole models, then offload; one PASS/FAIL line per check.",
            discussion: """
            Whole models: each folder under --models holding a fixture model (config.json,
            model.safetensors, expected.safetensors, gradients.safetensors from
            scripts/make_gradient_fixtures.py) runs on the GPU and is compared with the CPU and
            with the logits, losses and LoRA gradients transformers + PEFT stored there.
            Offload: a few full fine-tune steps of a small random model on the GPU with the
            optimizer offloaded to the CPU, or the checkpointed activations to pinned host
            memory, against the same steps without.
            """,
            shouldDisplay: false)

        @Option(help: "Folder of fixture models (default: the repository's Tests/FrugalModelsTests/Fixtures/models).")
        var models = "Tests/FrugalModelsTests/Fixtures/models"
        @Flag(name: .customLong("skip-ops"), help: "Only the whole-model checks.") var skipOps = false
        @Option(help: "Only the op checks whose names contain this (e.g. \"attention\" under compute-sanitizer).")
        var only: String?
        @Option(help: "Also write the results as JSON here.") var json: String?

        func run() throws {
            var results = [CheckResult]()
            if !skipOps { results += runGPUChecks(reference: CPUBackend(), only: only) { print($0.description) } }
            if only == nil {
                results += try modelChecks()
                results += try OffloadAgreement.run(makeBackend: { try CUDABackend() }) { print($0.description) }
            }
            let failed = results.filter { !$0.passed }.count
            print("\(results.count - failed) passed, \(failed) failed")
            if let json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                try encoder.encode(results).write(to: URL(fileURLWithPath: json))
            }
            if failed > 0 { throw ExitCode.failure }
        }

        /// Every fixture model under `models`, on a new CUDA backend against the CPU.
        private func modelChecks() throws -> [CheckResult] {
            let root = URL(fileURLWithPath: models)
            let folders = (try? FileManager.default.contentsOfDirectory(at: root, includingPropertiesForKeys: nil)) ?? []
            let fixtures = folders.filter { FileManager.default.fileExists(atPath: $0.appendingPathComponent("gradients.safetensors").path) }
                .sorted { $0.lastPathComponent < $1.lastPathComponent }
            guard !fixtures.isEmpty else {
                print("no fixture models under \(models): whole-model checks skipped")
                return []
            }
            let gpu = try CUDABackend(), cpu = CPUBackend()
            var results = [CheckResult]()
            for folder in fixtures {
                do {
                    results += try ModelAgreement(folder: folder).run(candidate: gpu, reference: cpu) { print($0.description) }
                } catch {
                    let failure = CheckResult(name: "\(folder.lastPathComponent) whole model", passed: false, maxError: .infinity,
                                              tolerance: 0, detail: "\(error)")
                    print(failure.description)
                    results.append(failure)
                }
            }
            return results
        }
    }
}
