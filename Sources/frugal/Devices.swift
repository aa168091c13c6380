// `frugal devices` and `frugal gpu-check`: what compute Frugal finds, and the GPU checked against the CPU.
import ArgumentParser
import Foundation
import FrugalCPU
import FrugalCUDA

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
            abstract: "Run every CUDA op forward and backward against the CPU backend; one PASS/FAIL line per check.",
            shouldDisplay: false)

        func run() throws {
            let results = runGPUChecks(reference: CPUBackend()) { print($0.description) }
            let failed = results.filter { !$0.passed }.count
            print("\(results.count - failed) passed, \(failed) failed")
            if failed > 0 { throw ExitCode.failure }
        }
    }
}
