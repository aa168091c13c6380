// Tests of block dequantization and the fused packed-row dot product, against the gguf
// package's reference dequantization (fixtures from scripts/make_gguf_fixtures.py).
import Foundation
import XCTest
import FrugalCore
import FrugalFormats

final class BlockQuantizationTests: XCTestCase {
    func testDequantizationIsBitExactToTheReference() throws {
        let file = try GGUFFile(path: GGUFFixture.typesPath)
        let expected = try GGUFFixture.expectedValues()
        // Every dtype a GGUF file can hold: nf4 is Frugal's own (NF4Tests), 8-bit optimizer state
        // has DynamicQuantizationTests.
        let fileDTypes = DType.allCases.filter { $0 != .nf4 && !$0.isOptimizerState }.map(\.rawValue)
        XCTAssertEqual(Set(GGUFFixture.manifest.map(\.dtype)), Set(fileDTypes), "every GGUF dtype is covered")
        for entry in GGUFFixture.manifest {
            let values = try file.dequantized(entry.name)
            let reference = expected[entry.offset..<entry.offset + entry.count]
            XCTAssertEqual(values.map(\.bitPattern), reference.map(\.bitPattern), "\(entry.name) (\(entry.dtype))")
        }
    }

    func testDequantizesFromUnalignedSources() throws {
        let file = try GGUFFile(path: GGUFFixture.typesPath)
        for entry in GGUFFixture.manifest {
            let info = try XCTUnwrap(file.tensor(entry.name))
            let data = try file.tensorData(entry.name)
            let shifted = UnsafeMutableRawPointer.allocate(byteCount: data.count + 1, alignment: 16)
            defer { shifted.deallocate() }
            (shifted + 1).copyMemory(from: data.baseAddress!, byteCount: data.count)
            var values = [Float](repeating: .nan, count: entry.count)
            BlockQuantization.dequantize(info.dtype, shifted + 1, &values, count: entry.count)
            XCTAssertEqual(values.map(\.bitPattern), try file.dequantized(entry.name).map(\.bitPattern), entry.name)
        }
    }

    func testDotMatchesTheReferenceRowByRowAndWhole() throws {
        let file = try GGUFFile(path: GGUFFixture.typesPath)
        let expected = try GGUFFixture.expectedValues()
        var random = GGUFTestRandom(seed: 1)
        for entry in GGUFFixture.manifest {
            let info = try XCTUnwrap(file.tensor(entry.name))
            let data = try file.tensorData(entry.name)
            let x = (0..<entry.count).map { _ in Float.random(in: -1...1, using: &random) }
            let rowLength = info.shape.last
            let rowBytes = info.dtype.byteCount(elements: rowLength)!
            // Each row, then the whole tensor as one long row (several 256-value chunks).
            var spans = (0..<info.shape.rows).map { (start: $0 * rowLength, count: rowLength, byte: $0 * rowBytes) }
            spans.append((0, entry.count, 0))
            for span in spans {
                let reference = expected[entry.offset + span.start..<entry.offset + span.start + span.count]
                let xs = x[span.start..<span.start + span.count]
                let dot = xs.withUnsafeBufferPointer {
                    BlockQuantization.dot(info.dtype, data.baseAddress! + span.byte, $0.baseAddress!, count: span.count)
                }
                assertClose(dot, reference: reference, x: xs, "\(entry.name) values \(span.start)..<\(span.start + span.count)")
            }
        }
    }

    func testDotWithPartialChunksAndTails() {
        // 11 Q8_0 blocks (352 values: a 256 chunk, then 96) and 300 f16 values (not a multiple of 8).
        var random = GGUFTestRandom(seed: 2)
        var q8 = [UInt8]()
        for _ in 0..<11 {
            q8 += [0x00, 0x2C]  // d = 0.0625
            q8 += (0..<32).map { _ in UInt8.random(in: 0...255, using: &random) }
        }
        let halves = (0..<300).map { _ in HalfPrecision.floatToF16(Float.random(in: -4...4, using: &random)) }
        let cases: [(DType, [UInt8], Int)] = [
            (.q8_0, q8, 352),
            (.f16, halves.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }, 300),
        ]
        for (dtype, bytes, count) in cases {
            let x = (0..<count).map { _ in Float.random(in: -1...1, using: &random) }
            var values = [Float](repeating: 0, count: count)
            bytes.withUnsafeBytes { BlockQuantization.dequantize(dtype, $0.baseAddress!, &values, count: count) }
            let dot = bytes.withUnsafeBytes { BlockQuantization.dot(dtype, $0.baseAddress!, x, count: count) }
            assertClose(dot, reference: values[...], x: x[...], "\(dtype) × \(count)")
        }
    }

    func testHandMadeBlocks() {
        // Q8_0: d = 0.5, qs = -16...15 → -8...7.5
        var q8: [UInt8] = [0x00, 0x38] + (0..<32).map { UInt8(bitPattern: Int8($0 - 16)) }
        XCTAssertEqual(decode(.q8_0, &q8, count: 32), (0..<32).map { Float($0 - 16) * 0.5 })
        // Q4_0: d = 2; byte i holds i (low) and 15 - i (high): values (i − 8)·2, then (7 − i)·2.
        var q40: [UInt8] = [0x00, 0x40] + (0..<16).map { UInt8($0 | (15 - $0) << 4) }
        XCTAssertEqual(decode(.q4_0, &q40, count: 32),
                       (0..<16).map { Float($0 - 8) * 2 } + (0..<16).map { Float(7 - $0) * 2 })
        // Q4_1: d = 1, m = -0.5: values q − 0.5.
        var q41: [UInt8] = [0x00, 0x3C, 0x00, 0xB8] + (0..<16).map { UInt8($0 | (15 - $0) << 4) }
        XCTAssertEqual(decode(.q4_1, &q41, count: 32),
                       (0..<16).map { Float($0) - 0.5 } + (0..<16).map { Float(15 - $0) - 0.5 })
        // Q4_K: d = 1, dmin = 1; sub-block j has scale 7j + 13 and min 63 − 6j (6 bits each:
        // whole bytes for 0–3, split 4 + 2 bits for 4–7); every q is 3 (low) and 5 (high).
        func scale(_ j: Int) -> Int { 7 * j + 13 }
        func min(_ j: Int) -> Int { 63 - 6 * j }
        var scales = [UInt8](repeating: 0, count: 12)
        for j in 0..<4 { scales[j] = UInt8(scale(j)); scales[j + 4] = UInt8(min(j)) }
        for j in 4..<8 {
            let (sc, m) = (scale(j), min(j))
            scales[j + 4] = UInt8((sc & 0x0F) | (m & 0x0F) << 4)
            scales[j - 4] |= UInt8((sc >> 4) << 6)
            scales[j] |= UInt8((m >> 4) << 6)
        }
        var q4k: [UInt8] = [0x00, 0x3C, 0x00, 0x3C] + scales + [UInt8](repeating: 0x53, count: 128)
        let expectedK = (0..<256).map { i -> Float in
            let sub = i / 32
            return Float(scale(sub)) * (sub % 2 == 0 ? 3 : 5) - Float(min(sub))
        }
        XCTAssertEqual(decode(.q4_K, &q4k, count: 256), expectedK)
        // Q6_K: d = 0.5, scale of sub-block s is s − 8; all ql = 0x21, qh = 0b11_10_01_00.
        var q6k = [UInt8](repeating: 0x21, count: 128) + [UInt8](repeating: 0b1110_0100, count: 64)
            + (0..<16).map { UInt8(bitPattern: Int8($0 - 8)) } + [0x00, 0x38]
        let expected6 = (0..<256).map { i -> Float in
            let k = (i % 128) / 32  // which of the four 32-value groups of a 128 half
            let low = k < 2 ? 1 : 2, high = k  // qh >> 2k & 3 = k
            let sub = i / 16
            return 0.5 * Float(sub - 8) * Float(low | high << 4 - 32)
        }
        XCTAssertEqual(decode(.q6_K, &q6k, count: 256), expected6)
    }

    func testEveryHalfPatternDecodesExactly() {
        var bits = (0...UInt16.max).map { $0 }
        var values = [Float](repeating: 0, count: bits.count)
        bits.withUnsafeMutableBytes { BlockQuantization.dequantize(.f16, $0.baseAddress!, &values, count: 65536) }
        for (pattern, value) in zip(bits, values) {
            let reference = HalfPrecision.f16ToFloat(pattern)
            if reference.isNaN {
                XCTAssertTrue(value.isNaN, "f16 0x\(String(pattern, radix: 16))")
            } else {
                XCTAssertEqual(value.bitPattern, reference.bitPattern, "f16 0x\(String(pattern, radix: 16))")
            }
        }
        var brain: [UInt16] = [0x3F80, 0xC000, 0x0001, 0x7F80, 0x8000]
        var decoded = [Float](repeating: 0, count: 5)
        brain.withUnsafeMutableBytes { BlockQuantization.dequantize(.bf16, $0.baseAddress!, &decoded, count: 5) }
        XCTAssertEqual(decoded.map(\.bitPattern), brain.map { UInt32($0) << 16 })
    }

    // MARK: - Helpers

    private func decode(_ dtype: DType, _ bytes: inout [UInt8], count: Int) -> [Float] {
        XCTAssertEqual(bytes.count, dtype.byteCount(elements: count))
        var values = [Float](repeating: .nan, count: count)
        bytes.withUnsafeBytes { BlockQuantization.dequantize(dtype, $0.baseAddress!, &values, count: count) }
        return values
    }

    /// Asserts `dot` is within 1e-4 of the exact dot product, relative to `Σ|aᵢxᵢ|` (the scale
    /// of the terms, so cancellation does not inflate the test).
    private func assertClose(_ dot: Float, reference: ArraySlice<Float>, x: ArraySlice<Float>, _ message: String,
                             file: StaticString = #filePath, line: UInt = #line) {
        var exact = 0.0, scale = 0.0
        for (a, b) in zip(reference, x) {
            exact += Double(a) * Double(b)
            scale += abs(Double(a) * Double(b))
        }
        guard exact.isFinite else {
            return XCTAssertFalse(dot.isFinite, message, file: file, line: line)
        }
        XCTAssertEqual(Double(dot), exact, accuracy: 1e-4 * max(scale, 1e-30), message, file: file, line: line)
    }
}

/// The fixtures written by scripts/make_gguf_fixtures.py under Fixtures/gguf.
enum GGUFFixture {
    /// One tensor of types.gguf.bin as listed in types.json.
    struct Entry: Decodable {
        var name: String
        var dtype: String
        var shape: [Int]
        var offset: Int
        var count: Int
    }

    /// Reference values of a few tensors of the real SmolLM2 file (smollm2.json).
    struct SmolLM2Reference: Decodable {
        struct Tensor: Decodable {
            var first: [Float]
            var sum: Double
            var count: Int
        }
        var tensor_count: Int
        var tensors: [String: Tensor]
    }

    static var directory: URL {
        Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("gguf")
    }

    static var typesPath: String { directory.appendingPathComponent("types.gguf.bin").path }

    static func typesBytes() throws -> [UInt8] {
        [UInt8](try Data(contentsOf: directory.appendingPathComponent("types.gguf.bin")))
    }

    static let manifest: [Entry] = {
        struct Manifest: Decodable { var tensors: [Entry] }
        let data = try! Data(contentsOf: directory.appendingPathComponent("types.json"))
        return try! JSONDecoder().decode(Manifest.self, from: data).tensors
    }()

    /// types.expected.f32: the gguf package's dequantization of every tensor, in manifest order.
    static func expectedValues() throws -> [Float] {
        let data = try Data(contentsOf: directory.appendingPathComponent("types.expected.f32"))
        return data.withUnsafeBytes { raw in
            (0..<data.count / 4).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
        }
    }

    static func smolLM2Reference() throws -> SmolLM2Reference {
        let data = try Data(contentsOf: directory.appendingPathComponent("smollm2.json"))
        return try JSONDecoder().decode(SmolLM2Reference.self, from: data)
    }
}
