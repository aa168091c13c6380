// CUDAError: what went wrong with the GPU, its libraries or a kernel, each one plain line.
import Foundation
import FrugalCore

/// An error from loading or using CUDA: which library, call or kernel, and why.
public enum CUDAError: Error, CustomStringConvertible, Equatable {
    /// A shared library was not found: its file names, what it is for, and the folders searched.
    case libraryNotFound(names: [String], purpose: String, searched: [String])
    /// A library opened but lacks a function Frugal needs (usually too old a version).
    case missingSymbol(library: String, symbol: String)
    /// A CUDA driver call failed.
    case driver(call: String, code: Int32, message: String)
    /// The driver loaded but there is no usable GPU.
    case noDevice(String)
    /// An NVRTC call failed.
    case nvrtc(call: String, code: Int32, message: String)
    /// A kernel source failed to compile: its file, the target architecture and NVRTC's log.
    case compileFailed(source: String, architecture: String, log: String)
    /// A kernel source or the folder of kernel sources could not be found or read.
    case kernelSourceMissing(String)
    /// A cuBLASLt call failed.
    case cublas(call: String, status: Int32)
    /// An NVML call failed.
    case nvml(call: String, code: Int32, message: String)
    /// A device allocation failed: how much was asked, for what, and the device's figures.
    case outOfMemory(requested: Int, category: String, free: Int, total: Int)

    public var description: String {
        switch self {
        case let .libraryNotFound(names, purpose, searched):
            let shown = searched.prefix(8).joined(separator: ", ") + (searched.count > 8 ? ", …" : "")
            let folders = searched.isEmpty ? "the default loader path" : shown + " and the default loader path"
            return "\(purpose): \(names.first ?? "?") not found (searched \(folders))"
        case let .missingSymbol(library, symbol):
            return "\(library) lacks \(symbol) (too old a version?)"
        case let .driver(call, code, message):
            return "CUDA driver: \(call) failed with error \(code) (\(message))"
        case let .noDevice(reason):
            return "no usable NVIDIA GPU: \(reason)"
        case let .nvrtc(call, code, message):
            return "NVRTC: \(call) failed with error \(code) (\(message))"
        case let .compileFailed(source, architecture, log):
            return "kernel \(source) failed to compile for \(architecture):\n\(log)"
        case let .kernelSourceMissing(what):
            return "CUDA kernel sources: \(what)"
        case let .cublas(call, status):
            return "cuBLASLt: \(call) failed with status \(status)"
        case let .nvml(call, code, message):
            return "NVML: \(call) failed with error \(code) (\(message))"
        case let .outOfMemory(requested, category, free, total):
            return "out of GPU memory: asked \(ByteCount.describe(requested)) for \(category), \(ByteCount.describe(free)) free of "
                + "\(ByteCount.describe(total)); `frugal plan` suggests settings that fit"
        }
    }
}

/// Resolves the functions of one opened library into typed C function pointers.
struct SymbolTable {
    let library: DynamicLibrary

    /// The function `name` as the C function type `T`.
    /// - Throws: `CUDAError.missingSymbol` when the library lacks it.
    func callAsFunction<T>(_ name: String, as type: T.Type = T.self) throws -> T {
        guard let address = library.symbol(name) else { throw CUDAError.missingSymbol(library: library.path, symbol: name) }
        return unsafeBitCast(address, to: T.self)
    }

    /// The function `name`, or nil when the library lacks it (optional entry points).
    func optional<T>(_ name: String, as type: T.Type = T.self) -> T? {
        library.symbol(name).map { unsafeBitCast($0, to: T.self) }
    }
}

/// Opens the first library of `names` in `DynamicLibrary.searchFolders()` or on the loader path.
/// - Throws: `CUDAError.libraryNotFound` naming the library, its purpose and the folders searched.
func openLibrary(_ names: [String], purpose: String,
                 folders: [String] = DynamicLibrary.searchFolders()) throws -> DynamicLibrary {
    guard let library = DynamicLibrary.open(names, folders: folders) else {
        throw CUDAError.libraryNotFound(names: names, purpose: purpose, searched: folders)
    }
    return library
}

/// A C string of at most `capacity` bytes written by `body`, as a Swift string.
func cString(capacity: Int, _ body: (UnsafeMutablePointer<CChar>, Int32) -> Void) -> String {
    var buffer = [CChar](repeating: 0, count: capacity + 1)
    buffer.withUnsafeMutableBufferPointer { body($0.baseAddress!, Int32(capacity)) }
    return decodeCString(buffer)
}

/// The UTF-8 text of a NUL-terminated character buffer (up to its first NUL).
func decodeCString(_ buffer: [CChar]) -> String {
    let end = buffer.firstIndex(of: 0) ?? buffer.endIndex
    return String(decoding: buffer[..<end].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
