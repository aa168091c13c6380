// KernelLibrary: Frugal's CUDA C kernel sources, compiled by NVRTC for the device's architecture
// on first use and cached on disk, then loaded as driver modules.
import Foundation
import FrugalCore

/// The kernel sources shipped as the `Kernels` resource folder: one `.cu` file per op and the
/// shared `.cuh` headers they include.
public struct KernelSources: Sendable {
    /// The folder holding the sources.
    public let folder: URL

    /// Environment variable naming a kernel folder that overrides the shipped one.
    public static let overrideVariable = "FRUGAL_KERNELS"
    /// The resource bundle SwiftPM makes for this target.
    static let bundleName = "Frugal_FrugalCUDA.resources"

    /// Sources in `folder`.
    public init(folder: URL) { self.folder = folder }

    /// The candidate folders, in order: `$FRUGAL_KERNELS`; the resource bundle beside the
    /// executable (where `Bundle.module` looks first, and where a static binary's resources are
    /// copied); the build's resource bundle; `Sources/FrugalCUDA/Kernels` of this source tree and
    /// of the working directory (the GPU machine runs in a copy of the repository).
    public static func candidateFolders(environment: [String: String] = ProcessInfo.processInfo.environment,
                                        sourceFile: String = #filePath) -> [URL] {
        var folders = [URL]()
        if let path = environment[overrideVariable] { folders.append(URL(fileURLWithPath: path)) }
        let executableFolder = URL(fileURLWithPath: CommandLine.arguments.first ?? ".").resolvingSymlinksInPath()
            .deletingLastPathComponent()
        for base in [Bundle.main.bundleURL, executableFolder] {
            folders.append(base.appendingPathComponent(bundleName).appendingPathComponent("Kernels"))
            folders.append(base.appendingPathComponent(bundleName))
        }
        folders.append(URL(fileURLWithPath: sourceFile).deletingLastPathComponent().appendingPathComponent("Kernels"))
        folders.append(URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
            .appendingPathComponent("Sources/FrugalCUDA/Kernels"))
        return folders
    }

    /// The first candidate folder that holds `common.cuh`.
    ///
    /// This does not use `Bundle.module`, whose accessor traps when the bundle is missing: a
    /// binary without its resources gets this error instead.
    /// - Throws: `CUDAError.kernelSourceMissing` listing the folders tried.
    public static func locate(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> KernelSources {
        let candidates = candidateFolders(environment: environment)
        for folder in candidates where FileManager.default.fileExists(atPath: folder.appendingPathComponent("common.cuh").path) {
            return KernelSources(folder: folder)
        }
        throw CUDAError.kernelSourceMissing("no Kernels folder with common.cuh (tried \(candidates.map(\.path).joined(separator: ", "))); "
            + "copy \(bundleName) beside the binary or set \(overrideVariable)")
    }

    /// The `.cu` files, sorted by name.
    public func kernelFiles() throws -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        let files = names.filter { $0.hasSuffix(".cu") }.sorted()
        if files.isEmpty { throw CUDAError.kernelSourceMissing("no .cu files in \(folder.path)") }
        return files
    }

    /// The text of one file of the folder.
    public func text(_ file: String) throws -> String {
        do { return try String(contentsOf: folder.appendingPathComponent(file), encoding: .utf8) } catch {
            throw CUDAError.kernelSourceMissing("cannot read \(folder.appendingPathComponent(file).path): \(error)")
        }
    }

    /// Every `.cuh` header by name, passed to NVRTC in memory.
    public func headers() throws -> [String: String] {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []).filter { $0.hasSuffix(".cuh") }
        var headers = [String: String]()
        for name in names { headers[name] = try text(name) }
        return headers
    }
}

/// Compiles kernel sources with NVRTC and caches the CUBIN on disk, keyed by a hash of the source,
/// its headers and the options, the architecture and NVRTC's version.
public final class KernelCompiler: @unchecked Sendable {
    public let nvrtc: NVRTC
    public let sources: KernelSources
    /// The folder given to NVRTC with `-I` for `cuda_fp16.h` and `cuda_bf16.h`, nil when none was found.
    public let includeFolder: String?
    /// Where compiled images are kept, nil to compile every time.
    public let cacheFolder: URL?
    private let versionTag: String

    /// The default cache: `${FRUGAL_CACHE:-~/.cache/frugal}/kernels`.
    public static func defaultCacheFolder(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        URL(fileURLWithPath: environment["FRUGAL_CACHE"] ?? NSHomeDirectory() + "/.cache/frugal").appendingPathComponent("kernels")
    }

    /// The first folder of `DynamicLibrary.includeFolders()` holding `cuda_bf16.h`.
    public static func findIncludeFolder(environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        DynamicLibrary.includeFolders(environment: environment).first {
            FileManager.default.fileExists(atPath: $0 + "/cuda_bf16.h") && FileManager.default.fileExists(atPath: $0 + "/cuda_fp16.h")
        }
    }

    public init(nvrtc: NVRTC, sources: KernelSources, includeFolder: String? = KernelCompiler.findIncludeFolder(),
                cacheFolder: URL? = KernelCompiler.defaultCacheFolder()) throws {
        self.nvrtc = nvrtc
        self.sources = sources
        self.includeFolder = includeFolder
        self.cacheFolder = cacheFolder
        let version = try nvrtc.version()
        versionTag = "nvrtc\(version.major).\(version.minor)"
    }

    /// The NVRTC options for `architecture` (e.g. "sm_90").
    public func options(architecture: String) -> [String] {
        var options = ["--gpu-architecture=\(architecture)", "-default-device", "--std=c++17", "-DFRUGAL_NVRTC=1"]
        if let includeFolder { options.append("-I\(includeFolder)") }
        return options
    }

    /// A compiled kernel file.
    public struct Compiled: Sendable {
        public var image: [UInt8]
        /// NVRTC's log: warnings (empty when clean, and for an image read from the cache).
        public var log: String
        /// Whether the image came from the disk cache.
        public var fromCache: Bool
    }

    /// The CUBIN of `file` for `architecture`, from the cache or compiled now (then cached).
    /// - Throws: `CUDAError.compileFailed` with NVRTC's log.
    public func compile(_ file: String, architecture: String, useCache: Bool = true) throws -> Compiled {
        let source = try sources.text(file), headers = try sources.headers(), options = options(architecture: architecture)
        var hasher = FNV1a()
        hasher.add(source)
        for name in headers.keys.sorted() { hasher.add(name); hasher.add(headers[name]!) }
        for option in options where !option.hasPrefix("-I") { hasher.add(option) }
        let stem = (file as NSString).deletingPathExtension
        let cacheFile = cacheFolder?.appendingPathComponent(
            "\(stem)-\(architecture)-\(versionTag)-\(String(hasher.value, radix: 16)).cubin")
        if useCache, let cacheFile, let data = try? Data(contentsOf: cacheFile), !data.isEmpty {
            return Compiled(image: [UInt8](data), log: "", fromCache: true)
        }
        let output = try nvrtc.compile(source, name: file, headers: headers, options: options)
        if let cacheFile {
            try? FileManager.default.createDirectory(at: cacheFile.deletingLastPathComponent(), withIntermediateDirectories: true)
            try? Data(output.image).write(to: cacheFile, options: .atomic)
        }
        return Compiled(image: output.image, log: output.log, fromCache: false)
    }
}

/// A 64-bit FNV-1a hash: the disk cache's key (not a security boundary).
struct FNV1a {
    private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325

    mutating func add(_ text: String) {
        for byte in text.utf8 { value = (value ^ UInt64(byte)) &* 0x100_0000_01b3 }
        value = (value ^ 0xff) &* 0x100_0000_01b3  // a separator, so ("ab","c") ≠ ("a","bc")
    }
}

/// The kernels of one device: each `.cu` file compiled (or read from the cache) and loaded as a
/// module on first use, each function looked up once.
public final class KernelLibrary: @unchecked Sendable {
    public let driver: CUDADriver
    public let compiler: KernelCompiler
    /// The device's architecture, e.g. "sm_90".
    public let architecture: String
    private let lock = NSLock()
    private var modules: [String: CUDADriver.Handle] = [:]
    private var functions: [String: CUDADriver.Handle] = [:]

    public init(driver: CUDADriver, compiler: KernelCompiler, architecture: String) {
        self.driver = driver
        self.compiler = compiler
        self.architecture = architecture
    }

    /// The kernel `name` of `file` (e.g. `("norms.cu", "rmsnorm_forward_f32")`).
    public func function(_ file: String, _ name: String) throws -> CUDADriver.Handle {
        lock.lock(); defer { lock.unlock() }
        let key = file + ":" + name
        if let function = functions[key] { return function }
        let module: CUDADriver.Handle
        if let loaded = modules[file] {
            module = loaded
        } else {
            module = try driver.loadModule(try compiler.compile(file, architecture: architecture).image)
            modules[file] = module
        }
        let function = try driver.function(module, name)
        functions[key] = function
        return function
    }

    deinit {
        for module in modules.values { driver.unloadModule(module) }
    }
}
