// GGUF: reads a GGUF file (header, metadata, tensor infos) and maps its tensor data.
//
// Layout (little-endian): "GGUF", u32 version, u64 tensor count, u64 metadata count; the
// metadata as (string key, u32 type, value); the tensor infos as (string name, u32 n_dims,
// u64 ne[n_dims] innermost first, u32 ggml type, u64 offset into the data section); padding
// to `general.alignment`; the data section. A string is a u64 byte length and UTF-8 bytes.
// Every byte is untrusted: each read is bounds-checked and each count is checked against the
// bytes left before anything is allocated for it.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import FrugalCore

/// One tensor's entry in a GGUF file.
public struct GGUFTensorInfo: Sendable, Equatable {
    /// The tensor's name, e.g. `blk.0.attn_q.weight`.
    public let name: String
    /// Dimensions outermost first (ggml's `ne` reversed): a (out, in) weight is `[out, in]`.
    public let shape: Shape
    /// The element type.
    public let dtype: DType
    /// Absolute byte offset of the tensor's data in the file.
    public let fileOffset: Int
    /// Size of the tensor's data in bytes.
    public let byteCount: Int
}

/// A GGUF file: its metadata and tensor infos, with the tensor data mapped read-only.
///
/// The file is mapped with `mmap`, not read, so opening a large model costs only the parsing
/// of its header. The mapping lives as long as this value or any copy of it: the pointers
/// `tensorData(_:)` returns are valid only while the `GGUFFile` is alive.
public struct GGUFFile: Sendable {
    /// The path the file was opened from.
    public let path: String
    /// The format version (2 or 3).
    public let version: Int
    /// Metadata by key.
    public let metadata: [String: GGUFValue]
    /// Tensor infos in file order.
    public let tensors: [GGUFTensorInfo]
    /// The data alignment in bytes (`general.alignment`, 32 when absent).
    public let alignment: Int
    /// Absolute byte offset of the data section.
    public let dataOffset: Int
    private let tensorIndex: [String: Int]
    private let mapping: GGUFMapping

    /// Opens, maps and validates the GGUF file at `path`.
    ///
    /// - Throws: `FrugalError.missingFile` when there is no file at `path`;
    ///   `FrugalError.malformedFile` (naming the field and its byte offset) when the file cannot
    ///   be read, is not GGUF version 2 or 3, is truncated, or holds inconsistent counts,
    ///   shapes, types, alignment or data offsets.
    public init(path: String) throws {
        let mapping = try GGUFMapping(path: path)
        var cursor = GGUFCursor(path: path, base: mapping.base, size: mapping.size)
        let header = try Self.readHeader(&cursor)
        let (metadata, alignment) = try Self.readMetadata(&cursor, count: header.metadataCount)
        let entries = try Self.readTensorInfos(&cursor, count: header.tensorCount)
        // Offsets and sizes here are bounded by the mapped size, so plain arithmetic is safe.
        let dataOffset = (cursor.offset + alignment - 1) / alignment * alignment
        let tensors = try Self.placeTensors(entries, cursor: cursor, dataOffset: dataOffset, alignment: alignment)

        self.path = path
        self.version = header.version
        self.metadata = metadata
        self.tensors = tensors
        self.alignment = alignment
        self.dataOffset = dataOffset
        self.tensorIndex = Dictionary(uniqueKeysWithValues: tensors.enumerated().map { ($1.name, $0) })
        self.mapping = mapping
    }

    /// The metadata value for `key`, if present.
    public subscript(key: String) -> GGUFValue? { metadata[key] }

    /// The model architecture (`general.architecture`), e.g. `llama`.
    public var architecture: String? { metadata["general.architecture"]?.string }

    /// The info of the tensor called `name`, if present.
    public func tensor(_ name: String) -> GGUFTensorInfo? {
        tensorIndex[name].map { tensors[$0] }
    }

    /// The raw bytes of tensor `name`, in its dtype's layout, inside the mapped file.
    ///
    /// The buffer is valid only while this `GGUFFile` is alive.
    /// - Throws: `FrugalError.missingTensor` when the file has no such tensor.
    public func tensorData(_ name: String) throws -> UnsafeRawBufferPointer {
        guard let info = tensor(name) else { throw FrugalError.missingTensor(name: name, path: path) }
        return UnsafeRawBufferPointer(start: mapping.base + info.fileOffset, count: info.byteCount)
    }

    /// The values of tensor `name` as floats, decoded from its dtype, outermost dimension first.
    ///
    /// - Throws: `FrugalError.missingTensor` when the file has no such tensor.
    public func dequantized(_ name: String) throws -> [Float] {
        guard let info = tensor(name) else { throw FrugalError.missingTensor(name: name, path: path) }
        let count = info.shape.count
        let source = mapping.base + info.fileOffset
        return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            if count > 0 { BlockQuantization.dequantize(info.dtype, source, buffer.baseAddress!, count: count) }
            initialized = count
        }
    }
}

// MARK: - Parsing

extension GGUFFile {
    /// The fixed header: version and the two counts.
    private struct Header {
        var version: Int
        var tensorCount: Int
        var metadataCount: Int
    }

    /// A tensor info as read, before its data offset is checked against the data section.
    private struct Entry {
        var name: String
        var shape: Shape
        var dtype: DType
        var byteCount: Int
        var relativeOffset: UInt64
        /// Where the info's offset field is, for error messages.
        var offsetField: Int
    }

    /// Smallest encodings: a metadata entry is a key length, a type and a 1-byte value; a
    /// tensor info is a name length, n_dims, a type and an offset.
    private static let minimumMetadataBytes = 8 + 4 + 1
    private static let minimumTensorInfoBytes = 8 + 4 + 4 + 8
    /// ggml's GGML_MAX_DIMS.
    private static let maximumDimensions = 4
    /// Largest accepted `general.alignment`.
    private static let maximumAlignment = 1 << 20

    private static func readHeader(_ cursor: inout GGUFCursor) throws -> Header {
        let magic = try cursor.read(UInt32.self, "magic")
        guard magic == 0x4655_4747 else {  // "GGUF"
            throw cursor.failure("not a GGUF file: magic is 0x\(String(magic.byteSwapped, radix: 16)), expected 'GGUF'", at: 0)
        }
        let version = try cursor.read(UInt32.self, "version")
        guard version == 2 || version == 3 else {
            if version.byteSwapped == 2 || version.byteSwapped == 3 {
                throw cursor.failure("big-endian GGUF is not supported", at: 4)
            }
            throw cursor.failure("unsupported GGUF version \(version) (Frugal reads versions 2 and 3)", at: 4)
        }
        let tensorCount = try cursor.readCount("tensor count")
        let metadataCount = try cursor.readCount("metadata key/value count")
        guard metadataCount <= cursor.remaining / minimumMetadataBytes else {
            throw cursor.failure("metadata key/value count \(metadataCount) is more than the \(cursor.remaining) bytes left in the file can hold", at: 16)
        }
        guard tensorCount <= cursor.remaining / minimumTensorInfoBytes else {
            throw cursor.failure("tensor count \(tensorCount) is more than the \(cursor.remaining) bytes left in the file can hold", at: 8)
        }
        return Header(version: Int(version), tensorCount: tensorCount, metadataCount: metadataCount)
    }

    /// Reads `count` key/value pairs; returns them and the validated alignment.
    private static func readMetadata(_ cursor: inout GGUFCursor, count: Int) throws -> ([String: GGUFValue], Int) {
        var metadata: [String: GGUFValue] = [:]
        metadata.reserveCapacity(count)
        var alignment = 32
        for index in 0..<count {
            let keyOffset = cursor.offset
            let key = try cursor.readString("metadata key \(index)")
            guard metadata[key] == nil else {
                throw cursor.failure("duplicate metadata key '\(key)'", at: keyOffset)
            }
            let typeOffset = cursor.offset
            let type = try cursor.read(UInt32.self, "type of metadata '\(key)'")
            let valueOffset = cursor.offset
            let value = try cursor.readValue(type: type, typeOffset: typeOffset, "metadata '\(key)'", depth: 0)
            if key == "general.alignment" {
                guard let a = value.int, a > 0, a & (a - 1) == 0, a <= maximumAlignment else {
                    throw cursor.failure("general.alignment \(value) is not a power of two between 1 and \(maximumAlignment)", at: valueOffset)
                }
                alignment = a
            }
            metadata[key] = value
        }
        return (metadata, alignment)
    }

    private static func readTensorInfos(_ cursor: inout GGUFCursor, count: Int) throws -> [Entry] {
        var entries: [Entry] = []
        entries.reserveCapacity(count)
        var names = Set<String>()
        for index in 0..<count {
            let nameOffset = cursor.offset
            let name = try cursor.readString("name of tensor \(index)")
            guard names.insert(name).inserted else {
                throw cursor.failure("duplicate tensor name '\(name)'", at: nameOffset)
            }
            let dimsOffset = cursor.offset
            let rank = try cursor.read(UInt32.self, "dimension count of tensor '\(name)'")
            guard rank <= maximumDimensions else {
                throw cursor.failure("tensor '\(name)' has \(rank) dimensions (GGUF allows at most \(maximumDimensions))", at: dimsOffset)
            }
            var ne: [Int] = []
            for d in 0..<Int(rank) {
                ne.append(try cursor.readCount("dimension \(d) of tensor '\(name)'"))
            }
            // Checked outermost first, the order `Shape.count` multiplies in: innermost first, a
            // zero dimension would hide an overflowing product of the outer ones.
            guard let elements = Shape.checkedCount(ne.reversed()) else {
                throw cursor.failure("tensor '\(name)' dimensions \(ne) have more elements than a 64-bit count holds", at: dimsOffset)
            }
            let typeOffset = cursor.offset
            let typeID = try cursor.read(UInt32.self, "type of tensor '\(name)'")
            guard let dtype = dtype(ggmlType: typeID) else {
                let known = ggmlTypeNames[typeID].map { " (\($0))" } ?? ""
                throw cursor.failure("tensor '\(name)' has ggml type \(typeID)\(known), which Frugal does not read (it reads F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K)", at: typeOffset)
            }
            let rowLength = ne.first ?? 1
            guard rowLength % dtype.blockSize == 0 else {
                throw cursor.failure("tensor '\(name)' rows of \(rowLength) elements are not whole \(dtype.rawValue) blocks of \(dtype.blockSize)", at: dimsOffset)
            }
            guard let byteCount = dtype.byteCount(elements: elements) else {
                throw cursor.failure("tensor '\(name)' of \(elements) \(dtype.rawValue) elements has more bytes than a 64-bit count holds", at: dimsOffset)
            }
            let offsetField = cursor.offset
            let relativeOffset = try cursor.read(UInt64.self, "data offset of tensor '\(name)'")
            entries.append(Entry(name: name, shape: Shape(Array(ne.reversed())), dtype: dtype, byteCount: byteCount,
                                 relativeOffset: relativeOffset, offsetField: offsetField))
        }
        return entries
    }

    /// Checks each tensor's data is aligned, inside the file and disjoint from the others.
    private static func placeTensors(_ entries: [Entry], cursor: GGUFCursor, dataOffset: Int,
                                     alignment: Int) throws -> [GGUFTensorInfo] {
        var tensors: [GGUFTensorInfo] = []
        tensors.reserveCapacity(entries.count)
        for entry in entries {
            guard entry.relativeOffset % UInt64(alignment) == 0 else {
                throw cursor.failure("data offset \(entry.relativeOffset) of tensor '\(entry.name)' is not a multiple of the alignment \(alignment)", at: entry.offsetField)
            }
            let relative = Int(exactly: entry.relativeOffset)
            let (start, overflowStart) = dataOffset.addingReportingOverflow(relative ?? 0)
            let (end, overflowEnd) = start.addingReportingOverflow(entry.byteCount)
            guard relative != nil, !overflowStart, !overflowEnd, end <= cursor.size else {
                throw cursor.failure("tensor '\(entry.name)' data (\(entry.byteCount) bytes at data offset \(entry.relativeOffset)) runs past the end of the file (\(cursor.size) bytes)", at: entry.offsetField)
            }
            tensors.append(GGUFTensorInfo(name: entry.name, shape: entry.shape, dtype: entry.dtype,
                                          fileOffset: start, byteCount: entry.byteCount))
        }
        let order = tensors.indices.sorted {
            (tensors[$0].fileOffset, tensors[$0].byteCount) < (tensors[$1].fileOffset, tensors[$1].byteCount)
        }
        for (before, after) in zip(order, order.dropFirst()) {
            let a = tensors[before], b = tensors[after]
            guard a.fileOffset + a.byteCount <= b.fileOffset else {
                throw cursor.failure("data of tensors '\(a.name)' and '\(b.name)' overlap", at: entries[after].offsetField)
            }
        }
        return tensors
    }

    /// The Frugal dtype of a ggml type id, for the types Frugal reads.
    private static func dtype(ggmlType id: UInt32) -> DType? {
        switch id {
        case 0: .f32
        case 1: .f16
        case 2: .q4_0
        case 3: .q4_1
        case 8: .q8_0
        case 12: .q4_K
        case 14: .q6_K
        case 30: .bf16
        default: nil
        }
    }

    /// Names of the other ggml types, for error messages.
    private static let ggmlTypeNames: [UInt32: String] = [
        6: "Q5_0", 7: "Q5_1", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 13: "Q5_K", 15: "Q8_K",
        16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S",
        22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64",
        29: "IQ1_M", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4", 40: "NVFP4",
    ]
}

// MARK: - Bounds-checked reading

/// A read position in the mapped bytes; every read checks the bytes left first.
private struct GGUFCursor {
    let path: String
    let base: UnsafeRawPointer
    let size: Int
    /// Invariant: `0 <= offset <= size`.
    var offset = 0

    /// Deepest nesting of arrays accepted (so recursion stays shallow).
    static let maximumArrayDepth = 8

    var remaining: Int { size - offset }

    func failure(_ problem: String, at offset: Int) -> FrugalError {
        .malformedFile(path: path, problem: problem, offset: offset)
    }

    /// Throws unless `count` bytes are left for `field`.
    func require(_ count: Int, _ field: @autoclosure () -> String) throws {
        guard count <= remaining else {
            throw failure("\(field()) runs past the end of the file (needs \(count) bytes, \(remaining) left)", at: offset)
        }
    }

    /// A little-endian integer.
    mutating func read<T: FixedWidthInteger>(_ type: T.Type, _ field: @autoclosure () -> String) throws -> T {
        try require(MemoryLayout<T>.size, field())
        let value = T(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: T.self))
        offset += MemoryLayout<T>.size
        return value
    }

    /// A u64 count or dimension, which must fit in `Int`.
    mutating func readCount(_ field: @autoclosure () -> String) throws -> Int {
        let at = offset
        let raw = try read(UInt64.self, field())
        guard let value = Int(exactly: raw) else {
            throw failure("\(field()) is \(raw), too large", at: at)
        }
        return value
    }

    /// A length-prefixed UTF-8 string (invalid UTF-8 is repaired with U+FFFD).
    mutating func readString(_ field: @autoclosure () -> String) throws -> String {
        let at = offset
        let length = try readCount("\(field()) length")
        guard length <= remaining else {
            throw failure("\(field()) length \(length) is more than the \(remaining) bytes left in the file", at: at)
        }
        let text = String(decoding: UnsafeRawBufferPointer(start: base + offset, count: length), as: UTF8.self)
        offset += length
        return text
    }

    /// A value of GGUF value type `type` (whose id was read at `typeOffset`).
    mutating func readValue(type: UInt32, typeOffset: Int, _ field: @autoclosure () -> String,
                            depth: Int) throws -> GGUFValue {
        switch type {
        case 0: return .u8(try read(UInt8.self, field()))
        case 1: return .i8(try read(Int8.self, field()))
        case 2: return .u16(try read(UInt16.self, field()))
        case 3: return .i16(try read(Int16.self, field()))
        case 4: return .u32(try read(UInt32.self, field()))
        case 5: return .i32(try read(Int32.self, field()))
        case 6: return .f32(Float(bitPattern: try read(UInt32.self, field())))
        case 7:
            let at = offset
            let byte = try read(UInt8.self, field())
            guard byte <= 1 else { throw failure("\(field()) is a bool stored as \(byte), not 0 or 1", at: at) }
            return .bool(byte == 1)
        case 8: return .string(try readString(field()))
        case 9: return try readArray(typeOffset: typeOffset, field(), depth: depth)
        case 10: return .u64(try read(UInt64.self, field()))
        case 11: return .i64(try read(Int64.self, field()))
        case 12: return .f64(Double(bitPattern: try read(UInt64.self, field())))
        default: throw failure("\(field()) has unknown value type \(type)", at: typeOffset)
        }
    }

    /// An array: element type, u64 count, then the elements.
    private mutating func readArray(typeOffset: Int, _ field: @autoclosure () -> String,
                                    depth: Int) throws -> GGUFValue {
        guard depth < Self.maximumArrayDepth else {
            throw failure("\(field()) nests arrays deeper than \(Self.maximumArrayDepth)", at: typeOffset)
        }
        let elementTypeOffset = offset
        let elementType = try read(UInt32.self, "\(field()) element type")
        guard let elementSize = Self.minimumSize(ofType: elementType) else {
            throw failure("\(field()) has unknown element type \(elementType)", at: elementTypeOffset)
        }
        let countOffset = offset
        let count = try readCount("\(field()) element count")
        guard count <= remaining / elementSize else {
            throw failure("\(field()) claims \(count) elements, more than the \(remaining) bytes left in the file can hold", at: countOffset)
        }
        var values: [GGUFValue] = []
        values.reserveCapacity(count)
        for index in 0..<count {
            values.append(try readValue(type: elementType, typeOffset: elementTypeOffset,
                                        "\(field())[\(index)]", depth: depth + 1))
        }
        return .array(values)
    }

    /// The fewest bytes a value of type `type` takes, or nil for an unknown type.
    private static func minimumSize(ofType type: UInt32) -> Int? {
        switch type {
        case 0, 1, 7: 1
        case 2, 3: 2
        case 4, 5, 6: 4
        case 8, 10, 11, 12: 8
        case 9: 12
        default: nil
        }
    }
}

/// A read-only memory mapping of a whole file, unmapped when released.
private final class GGUFMapping: @unchecked Sendable {
    /// Start of the mapped bytes.
    let base: UnsafeRawPointer
    /// Size of the file in bytes (at least 1).
    let size: Int

    init(path: String) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            let code = errno
            if code == ENOENT { throw FrugalError.missingFile(path: path, what: "GGUF file") }
            throw FrugalError.malformedFile(path: path, problem: "cannot open: \(String(cString: strerror(code)))")
        }
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0 else {
            throw FrugalError.malformedFile(path: path, problem: "cannot stat: \(String(cString: strerror(errno)))")
        }
        guard (status.st_mode & S_IFMT) == S_IFREG else {
            throw FrugalError.malformedFile(path: path, problem: "not a regular file")
        }
        guard let size = Int(exactly: status.st_size), size > 0 else {
            throw FrugalError.malformedFile(path: path, problem: "empty file, too short for a GGUF header", offset: 0)
        }
        guard let address = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), address != MAP_FAILED else {
            throw FrugalError.malformedFile(path: path, problem: "cannot map: \(String(cString: strerror(errno)))")
        }
        self.base = UnsafeRawPointer(address)
        self.size = size
    }

    deinit {
        munmap(UnsafeMutableRawPointer(mutating: base), size)
    }
}
