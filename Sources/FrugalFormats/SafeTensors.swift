// SafeTensors: Hugging Face's safetensors format — a checked, memory-mapped reader, an atomic
// writer, and a model folder's weights (one file or shards listed in an index).
import Foundation
import FrugalCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A safetensors file opened read-only with `mmap`; the header is parsed and checked once.
///
/// Layout: an 8-byte little-endian header length `n`, `n` bytes of JSON header, then the data
/// section. The header maps each tensor name to `dtype`, `shape` and `data_offsets` `[begin, end)`
/// relative to the data section, plus an optional `__metadata__` map of strings.
///
/// Every check on the untrusted bytes throws `FrugalError.malformedFile` naming the file, the
/// tensor or field, and the byte offset when known. Tensors of dtype F32, F16 and BF16 are
/// usable; integer and boolean tensors (I32, I64, …) are accepted in the header, so a file that
/// holds such buffers still opens, but reading them throws.
public final class SafeTensorsFile: @unchecked Sendable {
    /// The largest header this reader accepts (the Python library's limit).
    public static let maximumHeaderBytes = 100_000_000

    /// The file, for error messages.
    public let path: String
    /// The `__metadata__` strings (empty when absent).
    public let metadata: [String: String]
    /// Every tensor name, sorted.
    public let names: [String]

    private let entries: [String: SafeTensorsEntry]
    private let mapping: UnsafeRawPointer
    private let mappedBytes: Int
    private let dataStart: Int

    /// Maps the file at `url` and checks its header.
    /// - Throws: `FrugalError.missingFile` when absent, `FrugalError.malformedFile` when the
    ///   header is invalid or inconsistent with the file.
    public convenience init(url: URL) throws {
        try self.init(path: url.path)
    }

    /// Maps the file at `path` and checks its header.
    /// - Throws: `FrugalError.missingFile` when absent, `FrugalError.malformedFile` when the
    ///   header is invalid or inconsistent with the file.
    public init(path: String) throws {
        let (pointer, size) = try mapReadOnly(path: path)
        do {
            let header = try SafeTensorsHeader(mapping: UnsafeRawBufferPointer(start: pointer, count: size), path: path)
            self.path = path
            self.metadata = header.metadata
            self.entries = header.entries
            self.names = header.entries.keys.sorted()
            self.mapping = UnsafeRawPointer(pointer)
            self.mappedBytes = size
            self.dataStart = header.dataStart
        } catch {
            munmap(pointer, size)
            throw error
        }
    }

    deinit {
        munmap(UnsafeMutableRawPointer(mutating: mapping), mappedBytes)
    }

    /// Whether the file holds a tensor called `name`.
    public func contains(_ name: String) -> Bool {
        entries[name] != nil
    }

    /// The dtype and shape of tensor `name`.
    /// - Throws: `FrugalError.missingTensor` when absent, `FrugalError.malformedFile` when its
    ///   dtype is not F32, F16 or BF16.
    public func info(_ name: String) throws -> (dtype: DType, shape: Shape) {
        let (entry, dtype) = try usableEntry(name)
        return (dtype, entry.shape)
    }

    /// The raw little-endian bytes of tensor `name`, valid while this file object lives.
    /// - Throws: as `info(_:)`.
    public func data(_ name: String) throws -> UnsafeRawBufferPointer {
        let (entry, _) = try usableEntry(name)
        return UnsafeRawBufferPointer(start: mapping + dataStart + entry.begin, count: entry.byteCount)
    }

    /// The bytes of U8 tensor `name` (an opaque buffer, such as packed optimizer state), valid
    /// while this file object lives.
    /// - Throws: `FrugalError.missingTensor` when absent, `FrugalError.malformedFile` when it is
    ///   not a U8 tensor of one dimension.
    public func rawBytes(_ name: String) throws -> UnsafeRawBufferPointer {
        guard let entry = entries[name] else { throw FrugalError.missingTensor(name: name, path: path) }
        guard entry.dtypeName == "U8", entry.shape.rank == 1 else {
            throw FrugalError.malformedFile(path: path, problem: "tensor '\(name)' is \(entry.dtypeName) \(entry.shape), expected a U8 byte buffer")
        }
        return UnsafeRawBufferPointer(start: mapping + dataStart + entry.begin, count: entry.byteCount)
    }

    /// The values of tensor `name` as floats (f16 and bf16 converted exactly).
    /// - Throws: as `info(_:)`.
    public func floats(_ name: String) throws -> [Float] {
        let (entry, dtype) = try usableEntry(name)
        let bytes = UnsafeRawBufferPointer(start: mapping + dataStart + entry.begin, count: entry.byteCount)
        let count = entry.shape.count
        return [Float](unsafeUninitializedCapacity: count) { out, initialized in
            switch dtype {
            case .f32:
                if count > 0 { memcpy(out.baseAddress!, bytes.baseAddress!, count * 4) }
            case .f16:
                for i in 0..<count {
                    out[i] = HalfPrecision.f16ToFloat(bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                }
            default:  // bf16, the only other usable dtype
                for i in 0..<count {
                    out[i] = HalfPrecision.bf16ToFloat(bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                }
            }
            initialized = count
        }
    }

    /// The entry of `name` and its dtype, checked to exist and to be F32, F16 or BF16.
    private func usableEntry(_ name: String) throws -> (SafeTensorsEntry, DType) {
        guard let entry = entries[name] else { throw FrugalError.missingTensor(name: name, path: path) }
        guard let dtype = entry.dtype else {
            throw FrugalError.malformedFile(
                path: path, problem: "tensor '\(name)' has dtype \(entry.dtypeName), which Frugal cannot use (F32, F16, BF16 only)")
        }
        return (entry, dtype)
    }
}

// MARK: - Header

/// One tensor of a safetensors header: dtype, shape and its byte range in the data section.
private struct SafeTensorsEntry {
    /// The dtype as written in the header (`F32`, `I64`, …).
    var dtypeName: String
    /// The dtype, or nil for a dtype Frugal recognizes but cannot use (integers, booleans).
    var dtype: DType?
    var shape: Shape
    /// Byte range relative to the data section.
    var begin: Int
    var byteCount: Int
}

/// The checked header of a mapped safetensors file.
private struct SafeTensorsHeader {
    var metadata: [String: String] = [:]
    var entries: [String: SafeTensorsEntry] = [:]
    /// File offset of the data section.
    var dataStart: Int

    /// Element sizes of the dtypes a header may name; F32, F16 and BF16 map to a `DType`.
    private static let dtypes: [String: (size: Int, dtype: DType?)] = [
        "F32": (4, .f32), "F16": (2, .f16), "BF16": (2, .bf16),
        "F64": (8, nil), "I64": (8, nil), "U64": (8, nil), "I32": (4, nil), "U32": (4, nil),
        "I16": (2, nil), "U16": (2, nil), "I8": (1, nil), "U8": (1, nil), "BOOL": (1, nil),
    ]

    /// Parses and checks the header of `mapping`, which holds at least 8 bytes.
    init(mapping: UnsafeRawBufferPointer, path: String) throws {
        let size = mapping.count
        let declared = UInt64(littleEndian: mapping.loadUnaligned(as: UInt64.self))
        guard declared <= UInt64(min(size - 8, SafeTensorsFile.maximumHeaderBytes)) else {
            throw FrugalError.malformedFile(
                path: path,
                problem: "header length \(declared) exceeds the file (\(size) bytes) or the \(SafeTensorsFile.maximumHeaderBytes)-byte limit",
                offset: 0)
        }
        let headerLength = Int(declared)
        dataStart = 8 + headerLength
        let dataBytes = size - dataStart

        // The parser rejects names repeated byte for byte; the checks below reject names that
        // Swift's String equality merges (canonically equivalent ones).
        let json = try JSONValue.parse(UnsafeRawBufferPointer(rebasing: mapping[8..<dataStart]), path: path, baseOffset: 8)
        guard case let .object(members) = json else {
            throw FrugalError.malformedFile(path: path, problem: "header is not a JSON object", offset: 8)
        }
        for member in members {
            if member.key == "__metadata__" {
                metadata = try Self.metadata(member, path: path)
            } else {
                guard entries[member.key] == nil else {
                    throw FrugalError.malformedFile(path: path, problem: "duplicate name '\(member.key)'", offset: member.offset)
                }
                entries[member.key] = try Self.entry(member, dataBytes: dataBytes, path: path)
            }
        }
        try checkNoOverlap(path: path)
    }

    private static func metadata(_ member: JSONMember, path: String) throws -> [String: String] {
        guard case let .object(fields) = member.value else {
            throw FrugalError.malformedFile(path: path, problem: "__metadata__ is not an object of strings", offset: member.offset)
        }
        var result: [String: String] = [:]
        for field in fields {
            guard case let .string(text) = field.value else {
                throw FrugalError.malformedFile(path: path, problem: "__metadata__ value '\(field.key)' is not a string", offset: field.offset)
            }
            result[field.key] = text
        }
        return result
    }

    private static func entry(_ member: JSONMember, dataBytes: Int, path: String) throws -> SafeTensorsEntry {
        let name = member.key
        func fail(_ problem: String) -> FrugalError {
            .malformedFile(path: path, problem: "tensor '\(name)': \(problem)", offset: member.offset)
        }
        guard case let .object(fields) = member.value else { throw fail("entry is not an object") }
        var dtypeName: String?, dims: [Int]?, offsets: [Int]?
        for field in fields {
            switch field.key {
            case "dtype": if case let .string(s) = field.value { dtypeName = s } else { throw fail("dtype is not a string") }
            case "shape": dims = field.value.nonNegativeIntegers
            case "data_offsets": offsets = field.value.nonNegativeIntegers
            default: continue
            }
        }
        guard let dtypeName else { throw fail("missing dtype") }
        guard let known = dtypes[dtypeName] else { throw fail("unsupported dtype \(dtypeName)") }
        guard let dims else { throw fail("shape is missing or not a list of non-negative integers") }
        guard let offsets, offsets.count == 2 else {
            throw fail("data_offsets is missing or not two non-negative integers")
        }
        let (begin, end) = (offsets[0], offsets[1])
        guard begin <= end else { throw fail("data_offsets [\(begin), \(end)) begin after end") }
        guard end <= dataBytes else {
            throw fail("data_offsets [\(begin), \(end)) run past the data section (\(dataBytes) bytes)")
        }
        guard let count = Shape.checkedCount(dims) else { throw fail("shape \(Shape(dims)) overflows") }
        let (expected, overflow) = count.multipliedReportingOverflow(by: known.size)
        guard !overflow, expected == end - begin else {
            throw fail("data_offsets [\(begin), \(end)) hold \(end - begin) bytes, but shape \(Shape(dims)) of \(dtypeName) needs \(overflow ? "more than Int.max" : String(expected))")
        }
        return SafeTensorsEntry(dtypeName: dtypeName, dtype: known.dtype, shape: Shape(dims), begin: begin, byteCount: end - begin)
    }

    /// Throws when two tensors share bytes (empty tensors never overlap).
    private func checkNoOverlap(path: String) throws {
        let ordered = entries.filter { $0.value.byteCount > 0 }.sorted { $0.value.begin < $1.value.begin }
        for (previous, next) in zip(ordered, ordered.dropFirst()) where next.value.begin < previous.value.begin + previous.value.byteCount {
            throw FrugalError.malformedFile(
                path: path,
                problem: "tensors '\(previous.key)' and '\(next.key)' overlap in the data section (at data byte \(next.value.begin))")
        }
    }
}

/// Maps a regular file read-only; returns its address and size.
private func mapReadOnly(path: String) throws -> (UnsafeMutableRawPointer, Int) {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else {
        let code = errno
        if code == ENOENT { throw FrugalError.missingFile(path: path, what: "safetensors file") }
        throw FrugalError.malformedFile(path: path, problem: "cannot open: \(String(cString: strerror(code)))")
    }
    defer { close(fd) }
    var status = stat()
    guard fstat(fd, &status) == 0, (status.st_mode & S_IFMT) == S_IFREG else {
        throw FrugalError.malformedFile(path: path, problem: "not a regular file")
    }
    let size = Int(status.st_size)
    guard size >= 8 else {
        throw FrugalError.malformedFile(path: path, problem: "file is \(size) bytes, shorter than the 8-byte header length", offset: 0)
    }
    guard let pointer = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), pointer != UnsafeMutableRawPointer(bitPattern: -1) else {
        throw FrugalError.malformedFile(path: path, problem: "cannot map: \(String(cString: strerror(errno)))")
    }
    return (pointer, size)
}

// MARK: - Writer

/// Writes safetensors files byte for byte as the Python library does: tensors ordered F32, then
/// BF16, then F16 (so each stays aligned to its element size), by name within a dtype, laid out
/// in that order; the header padded with spaces to a multiple of 8 bytes.
public enum SafeTensorsWriter {
    /// Writes `tensors` and `metadata` to `url` atomically: a temporary file in the same folder
    /// is written, flushed to disk, then renamed over `url`.
    /// - Parameters:
    ///   - tensors: name, dtype (f32, f16 or bf16), shape, and the little-endian bytes.
    ///   - buffers: name and bytes of opaque buffers (packed optimizer state), written last as U8
    ///     tensors of one dimension (`SafeTensorsFile.rawBytes` reads them).
    ///   - metadata: the `__metadata__` strings, if any.
    ///   - url: the file to create or replace.
    /// - Throws: `FrugalError.invalidArgument` for a duplicate or reserved name, a quantized
    ///   dtype, bytes that do not match the shape, or when the file cannot be written.
    public static func write(_ tensors: [(name: String, dtype: DType, shape: Shape, bytes: [UInt8])],
                             buffers: [(name: String, bytes: [UInt8])] = [], metadata: [String: String]? = nil,
                             to url: URL) throws {
        let ordered = tensors.sorted { a, b in
            a.dtype == b.dtype ? a.name < b.name : layoutRank(a.dtype) < layoutRank(b.dtype)
        }
        let orderedBuffers = buffers.sorted { $0.name < $1.name }
        var seen = Set<String>()
        for name in tensors.map(\.name) + buffers.map(\.name) where !seen.insert(name).inserted {
            throw FrugalError.invalidArgument("safetensors: tensor name '\(name)' is used twice")
        }
        var entries = [String]()
        if let metadata {
            let fields = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }
            entries.append("\"__metadata__\":{" + fields.joined(separator: ",") + "}")
        }
        var offset = 0
        func entry(_ name: String, _ dtype: String, _ dims: [Int], bytes: Int) {
            entries.append("\(jsonString(name)):{\"dtype\":\"\(dtype)\",\"shape\":[\(dims.map(String.init).joined(separator: ","))],"
                           + "\"data_offsets\":[\(offset),\(offset + bytes)]}")
            offset += bytes
        }
        for tensor in ordered {
            try check(tensor)
            entry(tensor.name, tensor.dtype.rawValue.uppercased(), tensor.shape.dims, bytes: tensor.bytes.count)
        }
        for buffer in orderedBuffers {
            guard buffer.name != "__metadata__" else {
                throw FrugalError.invalidArgument("safetensors: tensor name '__metadata__' is reserved")
            }
            entry(buffer.name, "U8", [buffer.bytes.count], bytes: buffer.bytes.count)
        }
        var headerBytes = Array(("{" + entries.joined(separator: ",") + "}").utf8)
        while headerBytes.count % 8 != 0 { headerBytes.append(UInt8(ascii: " ")) }

        try AtomicFile.write(to: url) { file in
            var length = UInt64(headerBytes.count).littleEndian
            try withUnsafeBytes(of: &length) { try file.append($0) }
            try headerBytes.withUnsafeBytes { try file.append($0) }
            for bytes in ordered.map(\.bytes) + orderedBuffers.map(\.bytes) {
                try bytes.withUnsafeBytes { try file.append($0) }
            }
        }
    }

    /// The little-endian bytes of `values` stored as `dtype` (f16 and bf16 round to nearest even).
    /// - Throws: `FrugalError.unsupportedDType` for quantized dtypes.
    public static func bytes(of values: [Float], as dtype: DType) throws -> [UInt8] {
        switch dtype {
        case .f32:
            return values.withUnsafeBytes { Array($0) }
        case .f16:
            return values.map { HalfPrecision.floatToF16($0).littleEndian }.withUnsafeBytes { Array($0) }
        case .bf16:
            return values.map { HalfPrecision.floatToBF16($0).littleEndian }.withUnsafeBytes { Array($0) }
        default:
            throw FrugalError.unsupportedDType(dtype, operation: "safetensors")
        }
    }

    /// Position of a dtype in the file layout: the Python library's order (larger dtypes first).
    private static func layoutRank(_ dtype: DType) -> Int {
        switch dtype {
        case .f32: 0
        case .bf16: 1
        case .f16: 2
        default: 3
        }
    }

    /// Checks one tensor to write.
    private static func check(_ tensor: (name: String, dtype: DType, shape: Shape, bytes: [UInt8])) throws {
        guard tensor.name != "__metadata__" else {
            throw FrugalError.invalidArgument("safetensors: tensor name '__metadata__' is reserved")
        }
        guard !tensor.dtype.isQuantized else {
            throw FrugalError.unsupportedDType(tensor.dtype, operation: "safetensors tensor '\(tensor.name)'")
        }
        guard let count = Shape.checkedCount(tensor.shape.dims), tensor.dtype.byteCount(elements: count) == tensor.bytes.count else {
            throw FrugalError.invalidArgument(
                "safetensors: tensor '\(tensor.name)' has \(tensor.bytes.count) bytes, which do not fit shape \(tensor.shape) of \(tensor.dtype.rawValue)")
        }
    }

    /// `text` as a JSON string literal.
    private static func jsonString(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}


// MARK: - Model folder

/// The safetensors weights of a Hugging Face model folder: `model.safetensors`, or the shards
/// that `model.safetensors.index.json` lists. Tensor data stay memory-mapped.
public final class SafeTensorsFolder: @unchecked Sendable {
    /// The folder, for error messages.
    public let path: String
    /// The opened files (one, or one per shard).
    public let files: [SafeTensorsFile]
    /// Every tensor name across the files, sorted.
    public let names: [String]
    private let fileOfName: [String: Int]

    /// Opens `model.safetensors` in `folder`, or else the shards listed in
    /// `model.safetensors.index.json`.
    /// - Throws: `FrugalError.missingFile` when neither exists or a shard is absent,
    ///   `FrugalError.malformedFile` for an invalid index or file, or a tensor in two shards.
    public init(folder: URL) throws {
        path = folder.path
        let single = folder.appendingPathComponent("model.safetensors")
        let index = folder.appendingPathComponent("model.safetensors.index.json")
        if FileManager.default.fileExists(atPath: single.path) {
            files = [try SafeTensorsFile(url: single)]
        } else if FileManager.default.fileExists(atPath: index.path) {
            files = try Self.shards(index: index, folder: folder)
        } else {
            throw FrugalError.missingFile(path: folder.path, what: "model.safetensors or model.safetensors.index.json")
        }
        var fileOfName: [String: Int] = [:]
        for (i, file) in files.enumerated() {
            for name in file.names {
                if let other = fileOfName[name] {
                    throw FrugalError.malformedFile(
                        path: file.path, problem: "tensor '\(name)' is also in \(files[other].path)")
                }
                fileOfName[name] = i
            }
        }
        self.fileOfName = fileOfName
        names = fileOfName.keys.sorted()
    }

    /// Whether any file holds a tensor called `name`.
    public func contains(_ name: String) -> Bool {
        fileOfName[name] != nil
    }

    /// The file that holds tensor `name`.
    /// - Throws: `FrugalError.missingTensor` when no file holds it.
    public func file(containing name: String) throws -> SafeTensorsFile {
        guard let i = fileOfName[name] else { throw FrugalError.missingTensor(name: name, path: path) }
        return files[i]
    }

    /// The dtype and shape of tensor `name` (see `SafeTensorsFile.info(_:)`).
    public func info(_ name: String) throws -> (dtype: DType, shape: Shape) {
        try file(containing: name).info(name)
    }

    /// The raw bytes of tensor `name`, valid while this folder object lives.
    public func data(_ name: String) throws -> UnsafeRawBufferPointer {
        try file(containing: name).data(name)
    }

    /// The values of tensor `name` as floats.
    public func floats(_ name: String) throws -> [Float] {
        try file(containing: name).floats(name)
    }

    /// Opens the shards of an index, checking that each listed tensor is in its shard.
    private static func shards(index: URL, folder: URL) throws -> [SafeTensorsFile] {
        let json = try readFile(index).withUnsafeBytes { try JSONValue.parse($0, path: index.path, baseOffset: 0) }
        guard case let .object(top) = json, let mapMember = top.first(where: { $0.key == "weight_map" }),
              case let .object(weightMap) = mapMember.value else {
            throw FrugalError.malformedFile(path: index.path, problem: "missing object 'weight_map'")
        }
        var opened: [String: SafeTensorsFile] = [:]
        for member in weightMap {
            guard case let .string(shard) = member.value, !shard.isEmpty, !shard.contains("/"), shard != ".", shard != ".." else {
                throw FrugalError.malformedFile(
                    path: index.path, problem: "weight_map entry '\(member.key)' is not a file name in the folder", offset: member.offset)
            }
            if opened[shard] == nil {
                opened[shard] = try SafeTensorsFile(url: folder.appendingPathComponent(shard))
            }
            guard opened[shard]!.contains(member.key) else {
                throw FrugalError.malformedFile(
                    path: index.path, problem: "tensor '\(member.key)' is not in its shard \(shard)", offset: member.offset)
            }
        }
        guard !opened.isEmpty else { throw FrugalError.malformedFile(path: index.path, problem: "weight_map is empty") }
        return opened.keys.sorted().map { opened[$0]! }
    }
}

/// The bytes of a small file (an index or configuration), or a typed error.
func readFile(_ url: URL) throws -> [UInt8] {
    guard FileManager.default.fileExists(atPath: url.path) else {
        throw FrugalError.missingFile(path: url.path, what: url.lastPathComponent)
    }
    guard let data = FileManager.default.contents(atPath: url.path) else {
        throw FrugalError.malformedFile(path: url.path, problem: "cannot read")
    }
    return [UInt8](data)
}

// MARK: - JSON

/// A key and value of a JSON object, with the key's byte offset in the file.
struct JSONMember {
    var key: String
    var value: JSONValue
    var offset: Int
}

/// A parsed JSON value; objects keep their members in order.
///
/// The parser behind safetensors headers, `config.json` and `tokenizer.json`: strict RFC 8259
/// (no trailing commas, no comments), keys repeated byte for byte rejected (keys that differ
/// only in Unicode normalization are kept apart), nesting limited, integers kept exact.
indirect enum JSONValue {
    case object([JSONMember])
    case array([JSONValue])
    case string(String)
    /// A number written without fraction or exponent that fits in `Int`.
    case integer(Int)
    case number(Double)
    case bool(Bool)
    case null

    /// The deepest nesting the parser accepts.
    static let maximumDepth = 64

    /// Parses `bytes` as one JSON value, allowing surrounding whitespace.
    /// - Parameter baseOffset: file offset of `bytes`, for error messages.
    /// - Throws: `FrugalError.malformedFile` naming the problem and its file offset.
    static func parse(_ bytes: UnsafeRawBufferPointer, path: String, baseOffset: Int) throws -> JSONValue {
        var parser = JSONParser(bytes: bytes, path: path, baseOffset: baseOffset)
        parser.skipWhitespace()
        let value = try parser.value(depth: 0)
        parser.skipWhitespace()
        guard parser.index == bytes.count else { throw parser.fail("unexpected text after the JSON value") }
        return value
    }

    /// The value of a number written as an integer or as a double, or nil.
    var double: Double? {
        switch self {
        case let .integer(n): Double(n)
        case let .number(x): x
        default: nil
        }
    }

    /// An array of non-negative integers, or nil.
    var nonNegativeIntegers: [Int]? {
        guard case let .array(items) = self else { return nil }
        var result: [Int] = []
        for item in items {
            guard case let .integer(n) = item, n >= 0 else { return nil }
            result.append(n)
        }
        return result
    }
}

/// A recursive-descent JSON parser over bytes.
private struct JSONParser {
    let bytes: UnsafeRawBufferPointer
    let path: String
    let baseOffset: Int
    var index = 0

    init(bytes: UnsafeRawBufferPointer, path: String, baseOffset: Int) {
        self.bytes = bytes
        self.path = path
        self.baseOffset = baseOffset
    }

    func fail(_ problem: String) -> FrugalError {
        .malformedFile(path: path, problem: "invalid JSON: \(problem)", offset: baseOffset + index)
    }

    mutating func skipWhitespace() {
        while index < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[index]) { index += 1 }
    }

    private var current: UInt8? { index < bytes.count ? bytes[index] : nil }

    private mutating func expect(_ byte: UInt8) throws {
        guard current == byte else { throw fail("expected '\(Character(Unicode.Scalar(byte)))'") }
        index += 1
    }

    mutating func value(depth: Int) throws -> JSONValue {
        guard depth < JSONValue.maximumDepth else { throw fail("nested deeper than \(JSONValue.maximumDepth)") }
        guard let c = current else { throw fail("unexpected end") }
        switch c {
        case UInt8(ascii: "{"): return try object(depth: depth)
        case UInt8(ascii: "["): return try array(depth: depth)
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
        default: throw fail("unexpected character")
        }
    }

    private mutating func object(depth: Int) throws -> JSONValue {
        index += 1
        var members: [JSONMember] = []
        var seen = Set<[UInt8]>()  // exact bytes: "é" and "e\u{301}" are different keys
        skipWhitespace()
        if current == UInt8(ascii: "}") { index += 1; return .object(members) }
        while true {
            skipWhitespace()
            let keyOffset = baseOffset + index
            guard current == UInt8(ascii: "\"") else { throw fail("expected a string key") }
            let key = try string()
            guard seen.insert(Array(key.utf8)).inserted else {
                throw FrugalError.malformedFile(path: path, problem: "duplicate name '\(key)'", offset: keyOffset)
            }
            skipWhitespace()
            try expect(UInt8(ascii: ":"))
            skipWhitespace()
            members.append(JSONMember(key: key, value: try value(depth: depth + 1), offset: keyOffset))
            skipWhitespace()
            if current == UInt8(ascii: ",") { index += 1; continue }
            try expect(UInt8(ascii: "}"))
            return .object(members)
        }
    }

    private mutating func array(depth: Int) throws -> JSONValue {
        index += 1
        var items: [JSONValue] = []
        skipWhitespace()
        if current == UInt8(ascii: "]") { index += 1; return .array(items) }
        while true {
            skipWhitespace()
            items.append(try value(depth: depth + 1))
            skipWhitespace()
            if current == UInt8(ascii: ",") { index += 1; continue }
            try expect(UInt8(ascii: "]"))
            return .array(items)
        }
    }

    private mutating func literal(_ word: String) throws {
        for byte in word.utf8 {
            guard current == byte else { throw fail("expected '\(word)'") }
            index += 1
        }
    }

    private mutating func number() throws -> JSONValue {
        let start = index
        var isInteger = true
        if current == UInt8(ascii: "-") { index += 1 }
        try digits()
        if current == UInt8(ascii: ".") {
            isInteger = false
            index += 1
            try digits()
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            isInteger = false
            index += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { index += 1 }
            try digits()
        }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
        if isInteger, let n = Int(text) { return .integer(n) }
        guard let x = Double(text) else { throw fail("invalid number '\(text)'") }
        return .number(x)
    }

    private mutating func digits() throws {
        guard let c = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) else { throw fail("expected a digit") }
        while let c = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) { index += 1 }
    }

    private mutating func string() throws -> String {
        index += 1
        var utf8: [UInt8] = []
        while true {
            guard let c = current else { throw fail("unterminated string") }
            index += 1
            switch c {
            case UInt8(ascii: "\""):
                guard let text = String(validating: utf8, as: UTF8.self) else { throw fail("string is not valid UTF-8") }
                return text
            case UInt8(ascii: "\\"):
                try escape(into: &utf8)
            case 0..<0x20:
                throw fail("control character in string")
            default:
                utf8.append(c)
            }
        }
    }

    private mutating func escape(into utf8: inout [UInt8]) throws {
        guard let c = current else { throw fail("unterminated escape") }
        index += 1
        switch c {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): utf8.append(c)
        case UInt8(ascii: "b"): utf8.append(0x08)
        case UInt8(ascii: "f"): utf8.append(0x0C)
        case UInt8(ascii: "n"): utf8.append(0x0A)
        case UInt8(ascii: "r"): utf8.append(0x0D)
        case UInt8(ascii: "t"): utf8.append(0x09)
        case UInt8(ascii: "u"):
            var scalar = try hex4()
            if (0xD800..<0xDC00).contains(scalar) {
                try literal("\\u")
                let low = try hex4()
                guard (0xDC00..<0xE000).contains(low) else { throw fail("unpaired surrogate") }
                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
            }
            guard let unicode = Unicode.Scalar(scalar) else { throw fail("invalid \\u escape") }
            utf8.append(contentsOf: Array(String(unicode).utf8))
        default:
            throw fail("invalid escape")
        }
    }

    private mutating func hex4() throws -> UInt32 {
        var value: UInt32 = 0
        for _ in 0..<4 {
            guard let c = current, let digit = Character(Unicode.Scalar(c)).hexDigitValue else { throw fail("invalid \\u escape") }
            value = value * 16 + UInt32(digit)
            index += 1
        }
        return value
    }
}
