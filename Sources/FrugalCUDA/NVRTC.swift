// NVRTC: CUDA's run-time compiler (libnvrtc) opened at run time; compiles kernel sources to CUBIN.
import Foundation

/// The NVRTC functions Frugal calls. NVRTC needs no GPU: it compiles on any machine.
public final class NVRTC: @unchecked Sendable {
    public typealias Program = UnsafeMutableRawPointer

    /// The library that opened, and where.
    public let library: DynamicLibrary
    /// NVRTC's builtins library, opened beside it first: NVRTC loads it by bare name, which the
    /// loader finds only on its default path (not in a wheel's folder) unless it is already open.
    public let builtins: DynamicLibrary?

    private let nvrtcVersion: @convention(c) (UnsafeMutablePointer<Int32>, UnsafeMutablePointer<Int32>) -> Int32
    private let nvrtcGetErrorString: @convention(c) (Int32) -> UnsafePointer<CChar>?
    private let nvrtcCreateProgram: @convention(c) (UnsafeMutablePointer<Program?>, UnsafePointer<CChar>,
                                                    UnsafePointer<CChar>?, Int32,
                                                    UnsafePointer<UnsafePointer<CChar>?>?,
                                                    UnsafePointer<UnsafePointer<CChar>?>?) -> Int32
    private let nvrtcDestroyProgram: @convention(c) (UnsafeMutablePointer<Program?>) -> Int32
    private let nvrtcCompileProgram: @convention(c) (Program?, Int32, UnsafePointer<UnsafePointer<CChar>?>?) -> Int32
    private let nvrtcGetProgramLogSize: @convention(c) (Program?, UnsafeMutablePointer<Int>) -> Int32
    private let nvrtcGetProgramLog: @convention(c) (Program?, UnsafeMutablePointer<CChar>) -> Int32
    private let nvrtcGetPTXSize: @convention(c) (Program?, UnsafeMutablePointer<Int>) -> Int32
    private let nvrtcGetPTX: @convention(c) (Program?, UnsafeMutablePointer<CChar>) -> Int32
    private let nvrtcGetCUBINSize: @convention(c) (Program?, UnsafeMutablePointer<Int>) -> Int32
    private let nvrtcGetCUBIN: @convention(c) (Program?, UnsafeMutablePointer<CChar>) -> Int32

    /// File names tried, newest first.
    public static let libraryNames = ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so"]

    /// Opens NVRTC and resolves its functions.
    /// - Throws: `CUDAError.libraryNotFound` ("no NVRTC (CUDA's run-time compiler): …") or `.missingSymbol`.
    public init(folders: [String] = DynamicLibrary.searchFolders()) throws {
        library = try openLibrary(Self.libraryNames, purpose: "no NVRTC (CUDA's run-time compiler; scripts/setup-nvrtc installs it)",
                                  folders: folders)
        let folder = (library.path as NSString).deletingLastPathComponent
        let builtinNames = ((try? FileManager.default.contentsOfDirectory(atPath: folder.isEmpty ? "." : folder)) ?? [])
            .filter { $0.hasPrefix("libnvrtc-builtins.so") }.sorted { $0.count > $1.count }
        builtins = folder.isEmpty ? nil : DynamicLibrary.open(builtinNames, folders: [folder])
        let s = SymbolTable(library: library)
        nvrtcVersion = try s("nvrtcVersion")
        nvrtcGetErrorString = try s("nvrtcGetErrorString")
        nvrtcCreateProgram = try s("nvrtcCreateProgram")
        nvrtcDestroyProgram = try s("nvrtcDestroyProgram")
        nvrtcCompileProgram = try s("nvrtcCompileProgram")
        nvrtcGetProgramLogSize = try s("nvrtcGetProgramLogSize")
        nvrtcGetProgramLog = try s("nvrtcGetProgramLog")
        nvrtcGetPTXSize = try s("nvrtcGetPTXSize")
        nvrtcGetPTX = try s("nvrtcGetPTX")
        nvrtcGetCUBINSize = try s("nvrtcGetCUBINSize")
        nvrtcGetCUBIN = try s("nvrtcGetCUBIN")
    }

    /// NVRTC's message for a result code.
    public func errorString(_ code: Int32) -> String {
        nvrtcGetErrorString(code).map { String(cString: $0) } ?? "unknown error"
    }

    private func check(_ code: Int32, _ call: String) throws {
        if code != 0 { throw CUDAError.nvrtc(call: call, code: code, message: errorString(code)) }
    }

    /// NVRTC's version, e.g. (13, 0).
    public func version() throws -> (major: Int, minor: Int) {
        var major: Int32 = 0, minor: Int32 = 0
        try check(nvrtcVersion(&major, &minor), "nvrtcVersion")
        return (Int(major), Int(minor))
    }

    /// What one compilation produced.
    public struct Output: Sendable {
        /// The compiled image: CUBIN for `sm_XX` targets, PTX text (NUL-terminated) for `compute_XX`.
        public var image: [UInt8]
        /// Whether `image` is CUBIN (else PTX).
        public var isCUBIN: Bool
        /// The compiler's log (warnings; empty when clean).
        public var log: String
    }

    /// Compiles `source` with `headers` (name → text, resolved by `#include "name"`) and `options`.
    ///
    /// - Parameters:
    ///   - source: the CUDA C++ source.
    ///   - name: the source's file name (shown in the log).
    ///   - headers: in-memory headers by include name.
    ///   - options: NVRTC options, e.g. `--gpu-architecture=sm_90`, `-I/usr/local/cuda/include`.
    /// - Returns: the CUBIN when the architecture is `sm_XX` (else PTX) and the log.
    /// - Throws: `CUDAError.compileFailed` with the log when compilation fails.
    public func compile(_ source: String, name: String, headers: [String: String] = [:], options: [String]) throws -> Output {
        let headerNames = headers.keys.sorted()
        var program: Program?
        let code: Int32 = withCStrings(headerNames.map { headers[$0]! }) { contents in
            withCStrings(headerNames) { names in
                nvrtcCreateProgram(&program, source, name, Int32(headerNames.count),
                                   headerNames.isEmpty ? nil : contents, headerNames.isEmpty ? nil : names)
            }
        }
        try check(code, "nvrtcCreateProgram(\(name))")
        defer { _ = nvrtcDestroyProgram(&program) }
        let result = withCStrings(options) { nvrtcCompileProgram(program, Int32(options.count), $0) }
        var logSize = 0
        try check(nvrtcGetProgramLogSize(program, &logSize), "nvrtcGetProgramLogSize")
        var logBytes = [CChar](repeating: 0, count: max(logSize, 1))
        try check(nvrtcGetProgramLog(program, &logBytes), "nvrtcGetProgramLog")
        let log = decodeCString(logBytes).trimmingCharacters(in: .whitespacesAndNewlines)
        let architecture = options.first { $0.hasPrefix("--gpu-architecture=") || $0.hasPrefix("-arch=") }?
            .split(separator: "=").last.map(String.init) ?? "the default architecture"
        if result != 0 {
            throw CUDAError.compileFailed(source: name, architecture: architecture,
                                          log: log.isEmpty ? errorString(result) : log)
        }
        let isCUBIN = architecture.hasPrefix("sm_")
        var size = 0
        try check(isCUBIN ? nvrtcGetCUBINSize(program, &size) : nvrtcGetPTXSize(program, &size), "nvrtcGet*Size")
        var image = [UInt8](repeating: 0, count: size)
        let copied = image.withUnsafeMutableBytes { buffer -> Int32 in
            let base = buffer.baseAddress!.assumingMemoryBound(to: CChar.self)
            return isCUBIN ? nvrtcGetCUBIN(program, base) : nvrtcGetPTX(program, base)
        }
        try check(copied, isCUBIN ? "nvrtcGetCUBIN" : "nvrtcGetPTX")
        return Output(image: image, isCUBIN: isCUBIN, log: log)
    }
}

/// Calls `body` with a C array of C strings that live for the call.
func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    let duplicates = strings.map { strdup($0) }
    defer { duplicates.forEach { free($0) } }
    let pointers: [UnsafePointer<CChar>?] = duplicates.map { $0.map { UnsafePointer($0) } } + [nil]
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}
