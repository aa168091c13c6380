// DeviceOptions: the --device option shared by the commands that compute — which backend runs,
// how it is described in results, and which energy counter measures it.
import ArgumentParser
import Foundation
import FrugalCore
import FrugalCPU
import FrugalCUDA
import FrugalMeasure

/// Where a command computes.
struct DeviceOptions: ParsableArguments {
    @Option(help: ArgumentHelp("auto (the GPU when one is usable, else the CPU), cpu or cuda.", valueName: "device"))
    var device = "auto"

    /// The chosen backend.
    /// - Parameter lowPrecisionMatmul: on the GPU, run GEMMs with bf16/f16 weights on the tensor
    ///   cores (activations rounded to the weight's dtype), as bf16 and fp16 precision policies do.
    /// - Throws: a clear error when `cuda` was asked for and no GPU is usable, or the name is unknown.
    func compute(lowPrecisionMatmul: Bool = false) throws -> Compute {
        switch device.lowercased() {
        case "cpu":
            return .cpu()
        case "cuda", "gpu":
            do { return try .cuda(lowPrecisionMatmul: lowPrecisionMatmul) } catch {
                throw failure("--device cuda: \(error)")
            }
        case "auto":
            return (try? .cuda(lowPrecisionMatmul: lowPrecisionMatmul)) ?? .cpu()
        default:
            throw ValidationError("unknown --device '\(device)' (auto, cpu or cuda)")
        }
    }
}

/// A backend with what results say about it.
struct Compute {
    let backend: TrainingBackend
    /// The device in words, for results ("NVIDIA H100 80GB HBM3 (sm_90, 132 SMs)", "CPU, 2 cores, …").
    let description: String
    /// The energy counter of the device; nil when it cannot be read.
    let energyMeter: (any EnergyMeter)?

    static func cpu() -> Compute {
        let backend = CPUBackend()
        return Compute(backend: backend,
                       description: "CPU, \(ProcessInfo.processInfo.activeProcessorCount) cores, \(backend.blas.libraryPath ?? "no BLAS")",
                       energyMeter: RAPLMeter())
    }

    static func cuda(lowPrecisionMatmul: Bool) throws -> Compute {
        // 16-bit operands round more than TF32 does: the f32 GEMMs (LoRA) may use TF32 too.
        let backend = try CUDABackend(options: CUDABackend.Options(allowTF32: lowPrecisionMatmul, lowPrecisionMatmul: lowPrecisionMatmul))
        return Compute(backend: backend, description: "\(backend.name) (\(backend.architecture), \(backend.multiprocessors) SMs)",
                       energyMeter: NVMLEnergyMeter(index: backend.ordinal))
    }
}
