// Tests of NF4 blocks and the block quantizer: bitsandbytes' code book and code assignment
// (fixture from scripts/make_nf4_fixture.py), round-trip error on normal data, special blocks,
// the double-quantized absmax, and q8_0 as ggml quantizes it.
import Foundation
import XCTest
import FrugalCore
import FrugalFormats

final class NF4Tests: XCTestCase {
    /// bitsandbytes 0.50's output for 1024 values (see the script).
    struct Fixture: Decodable {
        let version: String
        let code: [Double]
        let values: [Double]
        let absmax: [Double]
        let packed: [UInt8]

        static func load() throws -> Fixture {
            let url = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
                .appendingPathComponent("nf4/bitsandbytes.json")
            return try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: url))
        }
    }

    private func quantize(_ dtype: DType, _ values: [Float]) -> [UInt8] {
        var bytes = [UInt8](repeating: 0xAA, count: dtype.byteCount(elements: values.count)!)
        bytes.withUnsafeMutableBytes { BlockQuantization.quantize(dtype, values, $0.baseAddress!, count: values.count) }
        return bytes
    }

    private func dequantize(_ dtype: DType, _ bytes: [UInt8], count: Int) -> [Float] {
        var values = [Float](repeating: .nan, count: count)
        bytes.withUnsafeBytes { BlockQuantization.dequantize(dtype, $0.baseAddress!, &values, count: count) }
        return values
    }

    /// Standard normal values (Box–Muller).
    private func gaussian(_ count: Int, seed: UInt64) -> [Float] {
        var random = GGUFTestRandom(seed: seed)
        return (0..<count).map { _ in
            let u = Double.random(in: Double.ulpOfOne..<1, using: &random), v = Double.random(in: 0..<1, using: &random)
            return Float((-2 * Foundation.log(u)).squareRoot() * Foundation.cos(2 * Double.pi * v))
        }
    }

    /// Sub-block j's effective absmax `scales[j]·d` and `d` of block `b`, as `dequantize` computes them.
    private func absmax(_ bytes: [UInt8], block b: Int, sub j: Int) -> (absmax: Float, d: Float) {
        let base = 134 * b
        let d = HalfPrecision.f16ToFloat(UInt16(bytes[base]) | UInt16(bytes[base + 1]) << 8)
        return (Float(bytes[base + 2 + j]) * d, d)
    }

    func testCodesAndMidpointsAreBitsandbytesConstants() throws {
        let fixture = try Fixture.load()
        XCTAssertEqual(fixture.code.count, 16)
        for i in 0..<16 {
            XCTAssertEqual(BlockQuantization.nf4Codes[i].bitPattern, Float(fixture.code[i]).bitPattern, "code \(i)")
        }
        XCTAssertEqual(BlockQuantization.nf4Codes[7], 0)
        // bitsandbytes' decision points are the midpoints of adjacent codes (to within an f32 step:
        // its literals are not all the nearest floats to them).
        for i in 0..<15 {
            let midpoint = (Double(fixture.code[i]) + Double(fixture.code[i + 1])) / 2
            XCTAssertEqual(Double(BlockQuantization.nf4Midpoints[i]), midpoint, accuracy: 1e-7, "midpoint \(i)")
        }
    }

    /// Each 64 values of the fixture have an absmax of `s·d` exactly, so the double-quantized
    /// absmax equals bitsandbytes' f32 one and the packed codes must be the same bytes.
    func testCodeAssignmentMatchesBitsandbytes() throws {
        let fixture = try Fixture.load()
        let values = fixture.values.map { Float($0) }
        let bytes = quantize(.nf4, values)
        for b in 0..<(values.count / 256) {
            for j in 0..<4 {
                let sub = 4 * b + j
                XCTAssertEqual(absmax(bytes, block: b, sub: j).absmax, Float(fixture.absmax[sub]), "absmax of sub-block \(sub)")
                let ours = Array(bytes[(134 * b + 6 + 32 * j)..<(134 * b + 6 + 32 * j + 32)])
                XCTAssertEqual(ours, Array(fixture.packed[(32 * sub)..<(32 * sub + 32)]),
                               "codes of sub-block \(sub) (bitsandbytes \(fixture.version))")
            }
        }
    }

    /// Normal data: the relative RMS error is what NF4 with blocks of 64 gives (0.0917 here;
    /// bitsandbytes: 0.0920 on a million standard normal values, double quantization or not); every value
    /// lands on its nearest code, and a packed row's dot product is the decoded row's.
    func testGaussianRoundTripErrorAndDot() {
        let count = 1 << 16
        let x = gaussian(count, seed: 1)
        let bytes = quantize(.nf4, x)
        let y = dequantize(.nf4, bytes, count: count)
        var squaredError = 0.0, squared = 0.0
        for i in 0..<count {
            squaredError += Double(x[i] - y[i]) * Double(x[i] - y[i])
            squared += Double(x[i]) * Double(x[i])
            let a = absmax(bytes, block: i / 256, sub: i % 256 / 64).absmax
            let nearest = (0..<16).map { abs(BlockQuantization.nf4Codes[$0] * a - x[i]) }.min()!
            XCTAssertLessThanOrEqual(abs(y[i] - x[i]), nearest * (1 + 1e-6) + 1e-7, "value \(i)")
        }
        let relative = (squaredError / squared).squareRoot()
        print("nf4 relative RMS error on \(count) standard normal values: \(relative)")
        XCTAssertEqual(relative, 0.0917, accuracy: 0.0005)

        let v = gaussian(count, seed: 2)
        let dot = bytes.withUnsafeBytes { BlockQuantization.dot(.nf4, $0.baseAddress!, v, count: count) }
        let reference = zip(y, v).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        XCTAssertEqual(Double(dot), reference, accuracy: 1e-4 * Double(count).squareRoot())
    }

    /// The scales round up: each sub-block's `scales[j]·d` is the smallest at or above its absmax
    /// (so |x/a| ≤ 1), and `255·d` the smallest f16 multiple at or above the block's.
    func testScalesRoundUpToTheSmallestCoveringAbsmax() {
        let x = gaussian(256 * 64, seed: 3).enumerated().map { $0.element * Float(1 + $0.offset % 7) * 0.01 }
        let bytes = quantize(.nf4, x)
        for b in 0..<64 {
            var largest: Float = 0
            for j in 0..<4 {
                let sub = x[(256 * b + 64 * j)..<(256 * b + 64 * j + 64)].map(abs).max()!
                largest = max(largest, sub)
                let (a, d) = absmax(bytes, block: b, sub: j)
                XCTAssertGreaterThanOrEqual(a, sub, "block \(b).\(j)")
                XCTAssertLessThan(a - d, sub, "block \(b).\(j): a smaller scale covers it")
            }
            let d = absmax(bytes, block: b, sub: 0).d
            XCTAssertGreaterThanOrEqual(255 * d, largest)
            XCTAssertLessThan(255 * Float(Float16(d).nextDown), largest)
        }
    }

    /// Zeros, a constant, tiny values (d underflows f16) and one huge sub-block beside a tiny one.
    func testSpecialBlocks() {
        let zeros = [Float](repeating: 0, count: 256)
        let zeroBytes = quantize(.nf4, zeros)
        XCTAssertEqual(Array(zeroBytes[0..<6]), [0, 0, 0, 0, 0, 0])
        XCTAssertEqual(dequantize(.nf4, zeroBytes, count: 256), zeros)
        XCTAssertTrue(zeroBytes[6...].allSatisfy { $0 == 0x77 }, "code 7 is the exact zero")

        for c: Float in [0.3, -1.7, 0.99609375] {
            let y = dequantize(.nf4, quantize(.nf4, [Float](repeating: c, count: 256)), count: 256)
            XCTAssertTrue(y.allSatisfy { $0 == y[0] })
            XCTAssertEqual(y[0], c, accuracy: abs(c) * 0x1p-10, "constant \(c)")
        }
        // 0.99609375 = 255·2⁻⁸: exactly representable, exactly kept.
        XCTAssertEqual(dequantize(.nf4, quantize(.nf4, [Float](repeating: 0.99609375, count: 256)), count: 256)[0], 0.99609375)

        let tiny = gaussian(256, seed: 4).map { $0 * 1e-9 }
        let tinyBack = dequantize(.nf4, quantize(.nf4, tiny), count: 256)
        XCTAssertTrue(zip(tiny, tinyBack).allSatisfy { $1.isFinite && abs($0 - $1) <= 6e-9 })

        var mixed = gaussian(256, seed: 5)
        for i in 64..<128 { mixed[i] *= 1e-4 }
        for i in 0..<64 { mixed[i] *= 1000 }
        let mixedBytes = quantize(.nf4, mixed), mixedBack = dequantize(.nf4, mixedBytes, count: 256)
        for j in 0..<4 {
            let a = absmax(mixedBytes, block: 0, sub: j).absmax
            for i in (64 * j)..<(64 * j + 64) {
                XCTAssertLessThanOrEqual(abs(mixed[i] - mixedBack[i]), 0.14 * a, "value \(i)")
            }
        }
    }

    /// With `d` an f16 and each sub-block's absmax `s·d` for a byte `s`, the scales are stored
    /// exactly and ±absmax, and zeros, come back exactly.
    func testAbsmaxValuesRoundTripExactly() {
        let d: Float = 0x1p-7, scales: [UInt8] = [200, 255, 131, 7]
        var x = gaussian(256, seed: 6).map { $0 * 0.2 }
        for j in 0..<4 {
            let a = Float(scales[j]) * d
            for i in (64 * j)..<(64 * j + 64) { x[i] = max(-a * 0.99, min(a * 0.99, x[i])) }
            x[64 * j + 5] = a
            x[64 * j + 40] = -a
            x[64 * j + 41] = 0
        }
        let bytes = quantize(.nf4, x)
        XCTAssertEqual(HalfPrecision.f16ToFloat(UInt16(bytes[0]) | UInt16(bytes[1]) << 8), d)
        XCTAssertEqual(Array(bytes[2..<6]), scales)
        let y = dequantize(.nf4, bytes, count: 256)
        for j in 0..<4 {
            let a = Float(scales[j]) * d
            XCTAssertEqual(y[64 * j + 5], a)
            XCTAssertEqual(y[64 * j + 40], -a)
            XCTAssertEqual(y[64 * j + 41], 0)
        }
    }

    /// q8_0 as ggml's `quantize_row_q8_0_ref`: re-quantizing the gguf package's q8_0 blocks
    /// (finite ones) gives back the same bytes, and normal data has the error of 8-bit steps.
    func testQ8_0QuantizesAsGGML() throws {
        let file = try GGUFFile(path: GGUFFixture.typesPath)
        let entry = try XCTUnwrap(GGUFFixture.manifest.first { $0.dtype == "q8_0" })
        let data = try file.tensorData(entry.name)
        let stored = [UInt8](UnsafeRawBufferPointer(data))
        let values = try file.dequantized(entry.name)
        var compared = 0
        for b in 0..<(entry.count / 32) where values[(32 * b)..<(32 * b + 32)].allSatisfy(\.isFinite) {
            XCTAssertEqual(quantize(.q8_0, Array(values[(32 * b)..<(32 * b + 32)])), Array(stored[(34 * b)..<(34 * b + 34)]),
                           "block \(b)")
            compared += 1
        }
        XCTAssertGreaterThan(compared, 4)

        let x = gaussian(1 << 14, seed: 7), y = dequantize(.q8_0, quantize(.q8_0, x), count: x.count)
        let error = zip(x, y).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }
        let relative = (error / x.reduce(0.0) { $0 + Double($1) * Double($1) }).squareRoot()
        print("q8_0 relative RMS error on \(x.count) standard normal values: \(relative)")
        XCTAssertEqual(relative, 0.00536, accuracy: 0.0002)
    }
}
