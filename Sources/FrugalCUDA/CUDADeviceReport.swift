// CUDADeviceReport: what `frugal devices` shows about NVIDIA GPUs — the GPUs, the driver, and
// which CUDA libraries loaded from where (or why not).
import Foundation
import FrugalCore

/// A probe of the machine's NVIDIA GPUs and CUDA libraries. Never throws: each failure is
/// recorded as a plain reason.
public struct CUDADeviceReport: Sendable, Codable, CustomStringConvertible {
    /// One library Frugal loads at run time.
    public struct Library: Sendable, Codable {
        /// What it is, e.g. "CUDA driver", "NVRTC".
        public var name: String
        /// The path that opened, nil when it did not.
        public var path: String?
        /// Its version, when known.
        public var version: String?
        /// Why it is not usable, nil when it is.
        public var problem: String?
    }

    /// One GPU.
    public struct GPU: Sendable, Codable {
        public var index: Int
        public var name: String
        /// Device memory in bytes.
        public var totalMemory: Int
        /// Compute capability, e.g. "9.0".
        public var computeCapability: String
        /// The NVRTC target for it, e.g. "sm_90".
        public var architecture: String
        public var multiprocessors: Int
        /// The power limit in watts, when NVML reads it.
        public var powerLimitWatts: Double?
    }

    /// The CUDA version the driver supports, e.g. "13.0".
    public var cudaDriverVersion: String?
    /// The kernel driver's version from NVML, e.g. "580.65.06".
    public var driverVersion: String?
    public var gpus: [GPU] = []
    public var libraries: [Library] = []
    /// Why no GPU is usable, nil when at least one is.
    public var problem: String?

    /// Whether a GPU is usable (the driver loaded and sees a device).
    public var hasGPU: Bool { !gpus.isEmpty }

    /// Probes the driver, NVRTC, cuBLASLt and NVML.
    public static func probe(environment: [String: String] = ProcessInfo.processInfo.environment) -> CUDADeviceReport {
        var report = CUDADeviceReport()
        let folders = DynamicLibrary.searchFolders(environment: environment)
        do {
            let driver = try CUDADriver(folders: folders)
            var entry = Library(name: "CUDA driver", path: driver.library.path)
            do {
                try driver.initialize()
                let v = try driver.version()
                report.cudaDriverVersion = "\(v.major).\(v.minor)"
                entry.version = report.cudaDriverVersion
                let count = try driver.deviceCount()
                for index in 0..<count {
                    let device = try driver.device(index)
                    let cc = try driver.computeCapability(device)
                    report.gpus.append(GPU(index: index, name: try driver.name(device), totalMemory: try driver.totalMemory(device),
                                           computeCapability: "\(cc.major).\(cc.minor)", architecture: "sm_\(cc.major)\(cc.minor)",
                                           multiprocessors: try driver.attribute(.multiprocessorCount, device)))
                }
                if count == 0 { report.problem = "the NVIDIA driver sees no GPU" }
            } catch {
                entry.problem = "\(error)"
                report.problem = "\(error)"
            }
            report.libraries.append(entry)
        } catch {
            report.libraries.append(Library(name: "CUDA driver", problem: "\(error)"))
            report.problem = "\(error)"
        }
        do {
            let nvrtc = try NVRTC(folders: folders)
            let v = try nvrtc.version()
            var entry = Library(name: "NVRTC", path: nvrtc.library.path, version: "\(v.major).\(v.minor)")
            if KernelCompiler.findIncludeFolder(environment: environment) == nil {
                entry.problem = "no CUDA headers (cuda_bf16.h) found for it; install the CUDA toolkit or run scripts/setup-nvrtc"
            }
            report.libraries.append(entry)
        } catch {
            report.libraries.append(Library(name: "NVRTC", problem: "\(error)"))
        }
        if report.hasGPU {
            // cuBLASLt needs a context to create its handle; only probe it where there is a GPU.
            do {
                let driver = try CUDADriver(folders: folders)
                let device = try driver.device(0)
                _ = try driver.retainPrimaryContext(device)
                defer { driver.releasePrimaryContext(device) }
                let blas = try CuBLASLt(folders: folders)
                report.libraries.append(Library(name: "cuBLASLt", path: blas.library.path, version: "\(blas.version)"))
            } catch {
                report.libraries.append(Library(name: "cuBLASLt", problem: "\(error)"))
            }
        } else if let library = DynamicLibrary.open(["libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"], folders: folders) {
            report.libraries.append(Library(name: "cuBLASLt", path: library.path))
        } else {
            report.libraries.append(Library(name: "cuBLASLt", problem: "libcublasLt not found"))
        }
        do {
            let nvml = try NVML(folders: folders)
            report.driverVersion = try? nvml.driverVersion()
            report.libraries.append(Library(name: "NVML", path: nvml.library.path, version: report.driverVersion))
            for i in report.gpus.indices {
                if let device = try? nvml.device(report.gpus[i].index), let limit = try? nvml.powerLimit(device) {
                    report.gpus[i].powerLimitWatts = Double(limit) / 1000
                }
            }
        } catch {
            report.libraries.append(Library(name: "NVML", problem: "\(error)"))
        }
        return report
    }

    /// Lines for the terminal: the GPUs (or why there is none), then each library.
    public var description: String {
        var lines = [String]()
        if gpus.isEmpty {
            lines.append("No NVIDIA GPU: \(problem ?? "none found")")
        }
        for gpu in gpus {
            var line = "GPU \(gpu.index): \(gpu.name), \(ByteCount.describe(gpu.totalMemory)), compute capability \(gpu.computeCapability) "
                + "(\(gpu.architecture)), \(gpu.multiprocessors) SMs"
            if let watts = gpu.powerLimitWatts { line += String(format: ", power limit %.0f W", watts) }
            lines.append(line)
        }
        if cudaDriverVersion != nil || driverVersion != nil {
            lines.append("Driver: \(driverVersion ?? "?") (CUDA \(cudaDriverVersion ?? "?"))")
        }
        for library in libraries {
            if let problem = library.problem {
                lines.append("  \(library.name): \(library.path.map { $0 + " — " } ?? "")\(problem)")
            } else {
                lines.append("  \(library.name): \(library.path ?? "?")\(library.version.map { " (\($0))" } ?? "")")
            }
        }
        return lines.joined(separator: "\n")
    }
}
