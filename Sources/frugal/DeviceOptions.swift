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
    @Option(name: .customLong("memory-limit"), help: ArgumentHelp(
        "Frugal's own memory budget (e.g. 24GiB): an allocation past it stops the run as running out of memory would. See whether a run fits a smaller GPU, or leave room for other work.",
        valueName: "bytes"))
    var memoryLimit: String?

    /// The chosen backend.
    /// - Parameter lowPrecisionMatmul: on the GPU, run GEMMs with bf16/f16 weights on the tensor
    ///   cores (activations rounded to the weight's dtype), as bf16 and fp16 precision policies do.
    /// - Throws: a clear error when `cuda` was asked for and no GPU is usable, or the name is unknown.
    func compute(lowPrecisionMatmul: Bool = false) throws -> Compute {
        let limit = try memoryLimit.map { text in
            guard let bytes = ByteCount.parse(text), bytes > 0 else {
                throw ValidationError("--memory-limit: '\(text)' is not a byte count (e.g. 24GiB, 512MiB)")
            }
            return bytes
        }
        let compute = try backend(lowPrecisionMatmul: lowPrecisionMatmul)
        compute.backend.ledger.limit = limit
        return compute
    }

    private func backend(lowPrecisionMatmul: Bool) throws -> Compute {
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

    /// The bytes Frugal may hold in all: what it holds now plus what the device has free (less 2%
    /// on the GPU for the allocator's rounding), or the `--memory-limit` when that is lower.
    func memoryBudget() -> Int {
        let held = backend.ledger.snapshot.currentTotal
        var device: Int
        if let gpu = backend as? CUDABackend {
            device = held + gpu.deviceMemory().free * 98 / 100
        } else {
            let page = sysconf(Int32(_SC_PAGESIZE))
            device = held + sysconf(Int32(_SC_AVPHYS_PAGES)) * page
        }
        if let limit = backend.ledger.limit { device = min(device, limit) }
        return device
    }

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
