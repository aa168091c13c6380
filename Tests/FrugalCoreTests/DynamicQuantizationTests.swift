// DynamicQuantizationTests: bitsandbytes' dynamic maps (entries checked against bitsandbytes
// 0.50.2 and against the construction), nearest-entry encoding, and the round-trip error of a
// block for both maps.
import Foundation
import XCTest
import FrugalCore

final class DynamicQuantizationTests: XCTestCase {
    /// Entries printed by `bitsandbytes.functional.create_dynamic_map(signed=…)` (0.50.2), as f32 bits.
    func testMapsHoldBitsandbytesEntries() {
        let signed: [Int: UInt32] = [0: 0xBF7E_3333, 1: 0xBF7A_999A, 63: 0xBDDB_3334, 126: 0xB513_A3B7, 127: 0,
                                     128: 0x3513_A3B7, 129: 0x365A_1A94, 191: 0x3DDB_3334, 254: 0x3F7E_3333, 255: 0x3F80_0000]
        let unsigned: [Int: UInt32] = [0: 0, 1: 0x34AE_7BAA, 2: 0x3550_0998, 64: 0x3C46_6667, 128: 0x3DE2_6666,
                                       200: 0x3F1D_E666, 254: 0x3F7F_199A, 255: 0x3F80_0000]
        for (code, bits) in signed { XCTAssertEqual(DynamicQuantization.signedMap[code].bitPattern, bits, "signed code \(code)") }
        for (code, bits) in unsigned {
            XCTAssertEqual(DynamicQuantization.unsignedMap[code].bitPattern, bits, "unsigned code \(code)")
        }
        XCTAssertEqual(DynamicQuantization.signedMap[0], -0.99296875, accuracy: 1e-7)
        XCTAssertEqual(DynamicQuantization.unsignedMap[254], 0.996484375, accuracy: 1e-7)
    }

    /// 256 strictly increasing values in [−1, 1] (signed) or [0, 1] (unsigned), holding 0 and 1,
    /// each within 4 ulps of the construction evaluated in double precision (torch's f32
    /// `linspace` rounds a few entries by an ulp or two).
    func testMapsFollowTheDynamicConstruction() {
        for signed in [true, false] {
            let map = signed ? DynamicQuantization.signedMap : DynamicQuantization.unsignedMap
            XCTAssertEqual(map.count, 256)
            XCTAssertTrue(zip(map, map.dropFirst()).allSatisfy { $0 < $1 }, "sorted, no repeats")
            XCTAssertTrue(map.contains(0) && map.last == 1 && map.allSatisfy { $0 >= (signed ? -1 : 0) && $0 <= 1 })
            XCTAssertEqual(map.firstIndex(of: 0), signed ? 127 : 0)
            var expected: [Double] = [0, 1]
            for i in 0..<7 {
                let points = signed ? (1 << i) + 1 : (1 << (i + 1)) + 1
                let boundaries = (0..<points).map { 0.1 + 0.9 * Double($0) / Double(points - 1) }
                let means = zip(boundaries, boundaries.dropFirst()).map { ($0 + $1) / 2 * pow(10, Double(i - 6)) }
                expected += means + (signed ? means.map { -$0 } : [])
            }
            expected.sort()
            for (code, (value, reference)) in zip(map, expected).enumerated() {
                XCTAssertLessThanOrEqual(abs(Double(value) - reference), 4 * Double(Float(reference).ulp),
                                         "\(signed ? "signed" : "unsigned") code \(code): \(value) against \(reference)")
            }
        }
    }

    /// `encode` is the nearest entry (the lower on a tie) among those of `x`'s sign (0 only for 0) —
    /// the same as a scan of the map — for values between and on the entries, past both ends, and
    /// as small as f32 goes (which bitsandbytes would round to 0).
    func testEncodePicksTheNearestEntry() {
        for map in [DynamicQuantization.signedMap, DynamicQuantization.unsignedMap] {
            var values: [Float] = [1.5, 0, 1e-9, .leastNonzeroMagnitude]
            if map[0] < 0 { values += [-2, -1, -1e-9, -.leastNonzeroMagnitude] }
            values += map
            for (a, b) in zip(map, map.dropFirst()) { values += [(a + b) / 2, a + (b - a) * 0.3, a + (b - a) * 0.7] }
            map.withUnsafeBufferPointer { m in
                for x in values {
                    let side = map.indices.filter { x == 0 || (map[$0] != 0 && (map[$0] > 0) == (x > 0)) }
                    let scan = side.min { abs(map[$0] - x) < abs(map[$1] - x) }!
                    XCTAssertEqual(Int(DynamicQuantization.encode(x, m.baseAddress!)), scan, "x = \(x)")
                }
            }
        }
    }

    /// One block of values spread over six decades below its largest: the round trip keeps absmax
    /// exactly, misses no value by more than half the map's widest gap times absmax (0.00704·A
    /// signed, 0.00352·A unsigned), and stays within 7% (signed) or 3.5% (unsigned) of values in
    /// the top decade, where the map has 64 (128) entries;
    /// a partly filled block encodes its padding as 0; an all-zero block decodes to zeros.
    func testRoundTripErrorIsBoundedByTheMapsSpacing() {
        var seed: UInt64 = 5
        func next() -> UInt64 {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return seed >> 33
        }
        for dtype in [DType.dynamic8, .dynamic8Unsigned] {
            let map = DynamicQuantization.map(dtype)
            let values: [Float] = (0..<200).map { _ in
                let magnitude = Float(pow(10, -6 * Double(next() % 10_000) / 10_000)) * 3
                return dtype == .dynamic8 && next() % 2 == 0 ? -magnitude : magnitude
            }
            let absmax = values.map(abs).max()!
            var block = [UInt8](repeating: 0xAB, count: dtype.blockBytes)
            var decoded = [Float](repeating: .nan, count: 256)
            map.withUnsafeBufferPointer { m in
                block.withUnsafeMutableBytes {
                    DynamicQuantization.quantizeBlock(values, count: values.count, into: $0.baseAddress!, map: m.baseAddress!)
                }
            }
            BlockQuantization.dequantize(dtype, block, &decoded, count: 256)
            XCTAssertEqual(block.withUnsafeBytes { $0.load(as: Float.self) }, absmax)
            let bound = (dtype == .dynamic8 ? 0.00704 : 0.00352) * absmax
            var worstAbove = Float(0)
            for (x, y) in zip(values, decoded) {
                XCTAssertLessThanOrEqual(abs(x - y), bound, "\(dtype): \(x) decoded as \(y)")
                if abs(x) >= absmax / 10 { worstAbove = max(worstAbove, abs(x - y) / abs(x)) }
            }
            XCTAssertLessThan(worstAbove, dtype == .dynamic8 ? 0.07 : 0.035, "\(dtype): relative error above absmax/10")
            XCTAssertEqual(Array(decoded[200...]), [Float](repeating: 0, count: 56), "\(dtype): padding")
            XCTAssertEqual(Set(block[204...]), [UInt8(dtype == .dynamic8 ? 127 : 0)], "\(dtype): padding codes")

            var zero = [UInt8](repeating: 0, count: dtype.blockBytes)
            map.withUnsafeBufferPointer { m in
                zero.withUnsafeMutableBytes {
                    DynamicQuantization.quantizeBlock([Float](repeating: 0, count: 256), count: 256, into: $0.baseAddress!,
                                                      map: m.baseAddress!)
                }
            }
            BlockQuantization.dequantize(dtype, zero, &decoded, count: 256)
            XCTAssertEqual(decoded, [Float](repeating: 0, count: 256), "\(dtype): zeros")
        }
    }

    /// The 8-bit moments are packed optimizer state: 260-byte blocks of 256, never weights.
    func testDynamicDTypesArePackedOptimizerState() {
        for dtype in [DType.dynamic8, .dynamic8Unsigned] {
            XCTAssertTrue(dtype.isQuantized && dtype.isOptimizerState)
            XCTAssertEqual(dtype.byteCount(elements: 512), 520)
            XCTAssertNil(dtype.byteCount(elements: 100))
        }
        XCTAssertEqual(DType.allCases.filter(\.isOptimizerState), [.dynamic8, .dynamic8Unsigned])
        XCTAssertEqual(DynamicQuantization.paddedCount(257), 512)
        XCTAssertEqual(DynamicQuantization.paddedCount(0), 0)
    }
}
