// Tests of the CPU backend's fast paths at sizes that exercise them — blocked attention over
// several query blocks, decoding attention, split GEMMs, packed-weight tiles and fused dots,
// gathered cross-entropy, reused buffers, the vectorized exp — against plain double-precision loops.
import Foundation
import XCTest
import FrugalCore
@testable import FrugalCPU

final class CPUKernelTests: XCTestCase {
    let backend = CPUBackend()
    var seed: UInt64 = 7

    /// Uniform values in [-scale, scale).
    private func random(_ count: Int, scale: Float = 1) -> [Float] {
        (0..<count).map { _ in
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return (Float(seed >> 40) / Float(1 << 24) * 2 - 1) * scale
        }
    }

    private func assertClose(_ actual: UnsafeMutableBufferPointer<Float>, _ expected: [Double], tolerance: Double,
                             _ name: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.count, expected.count, name, file: file, line: line)
        var worst = 0.0, at = 0
        for (i, (a, e)) in zip(actual, expected).enumerated() where abs(Double(a) - e) > worst {
            worst = abs(Double(a) - e); at = i
        }
        XCTAssertLessThanOrEqual(worst, tolerance, "\(name): worst error \(worst) at \(at)", file: file, line: line)
    }

    // MARK: - Attention

    /// Probabilities of query `i` of sequence `b`, head `h` (double precision), as `attention` defines them.
    private func naiveProbabilities(_ q: [Float], _ k: [Float], _ l: AttentionLayout, b: Int, h: Int, i: Int) -> [Double] {
        let d = l.headDim, kh = h / (l.heads / l.kvHeads), qStride = l.heads * d, kStride = l.kvHeads * d
        let limit = min(l.keyLength, l.queryOffset + i + 1)
        let own = l.segments?[b * l.keyLength + l.queryOffset + i]
        var scores = [Double](repeating: -.infinity, count: l.keyLength)
        for j in 0..<limit where own == nil || l.segments![b * l.keyLength + j] == own {
            var dot = 0.0
            for c in 0..<d {
                dot += Double(q[(b * l.queryLength + i) * qStride + h * d + c]) * Double(k[(b * l.keyLength + j) * kStride + kh * d + c])
            }
            scores[j] = dot * Double(l.scale)
        }
        let maximum = scores.max()!
        if maximum == -.infinity { return [Double](repeating: 0, count: l.keyLength) }
        let e = scores.map { $0 == -.infinity ? 0 : Foundation.exp($0 - maximum) }
        let total = e.reduce(0, +)
        return e.map { $0 / total }
    }

    private func naiveAttention(_ q: [Float], _ k: [Float], _ v: [Float], _ l: AttentionLayout) -> [Double] {
        let d = l.headDim, kh = { (h: Int) in h / (l.heads / l.kvHeads) }, qStride = l.heads * d, kStride = l.kvHeads * d
        var out = [Double](repeating: 0, count: l.batch * l.queryLength * qStride)
        for b in 0..<l.batch {
            for h in 0..<l.heads {
                for i in 0..<l.queryLength {
                    let p = naiveProbabilities(q, k, l, b: b, h: h, i: i)
                    for j in 0..<l.keyLength where p[j] != 0 {
                        for c in 0..<d {
                            out[(b * l.queryLength + i) * qStride + h * d + c] += p[j] * Double(v[(b * l.keyLength + j) * kStride + kh(h) * d + c])
                        }
                    }
                }
            }
        }
        return out
    }

    private func checkAttention(batch: Int, queryLength: Int, offset: Int, heads: Int, kvHeads: Int, d: Int,
                                segments: [Int32]? = nil, file: StaticString = #filePath, line: UInt = #line) {
        let keyLength = offset + queryLength
        let l = AttentionLayout(batch: batch, queryLength: queryLength, keyLength: keyLength, queryOffset: offset,
                                heads: heads, kvHeads: kvHeads, headDim: d, scale: 1 / Float(d).squareRoot(), segments: segments)
        let q = random(batch * queryLength * heads * d), k = random(batch * keyLength * kvHeads * d)
        let v = random(batch * keyLength * kvHeads * d)
        let out = backend.zeros([batch * queryLength, heads * d], .f32, .workspace)
        backend.attention(out, q: backend.tensor(q, [batch * queryLength, heads * d]), k: backend.tensor(k, [batch * keyLength, kvHeads * d]),
                          v: backend.tensor(v, [batch * keyLength, kvHeads * d]), layout: l)
        assertClose(out.floats, naiveAttention(q, k, v, l), tolerance: 1e-5, "attention \(queryLength)@\(offset)",
                    file: file, line: line)
    }

    func testAttentionOverSeveralQueryBlocksWithAndWithoutCachedKeys() {
        checkAttention(batch: 2, queryLength: 150, offset: 0, heads: 4, kvHeads: 2, d: 16)
        checkAttention(batch: 1, queryLength: 70, offset: 45, heads: 3, kvHeads: 1, d: 8)
    }

    func testAttentionWithPackedSegmentsAcrossBlocks() {
        let length = 130
        let segments = (0..<(2 * length)).map { Int32($0 % length < 50 ? 0 : $0 % length < 129 ? 1 : -1) }
        checkAttention(batch: 2, queryLength: length, offset: 0, heads: 2, kvHeads: 2, d: 8, segments: segments)
    }

    func testDecodingAttentionGroupsTheQueryHeadsOfEachKVHead() {
        checkAttention(batch: 1, queryLength: 1, offset: 36, heads: 6, kvHeads: 2, d: 16)
        checkAttention(batch: 3, queryLength: 1, offset: 0, heads: 4, kvHeads: 4, d: 8)
    }

    func testAttentionBackwardOverSeveralQueryBlocksMatchesTheNaiveGradient() {
        let batch = 1, length = 140, heads = 4, kvHeads = 2, d = 8
        let l = AttentionLayout(batch: batch, queryLength: length, keyLength: length, queryOffset: 0, heads: heads,
                                kvHeads: kvHeads, headDim: d, scale: 0.4)
        let qStride = heads * d, kStride = kvHeads * d, group = heads / kvHeads
        let q = random(length * qStride), k = random(length * kStride), v = random(length * kStride)
        let g = random(length * qStride)
        var dq = [Double](repeating: 0, count: q.count), dk = [Double](repeating: 0, count: k.count)
        var dv = [Double](repeating: 0, count: v.count)
        for h in 0..<heads {
            let kh = h / group
            for i in 0..<length {
                let p = naiveProbabilities(q, k, l, b: 0, h: h, i: i)
                var dp = [Double](repeating: 0, count: length)
                for j in 0..<length where p[j] != 0 {
                    for c in 0..<d { dp[j] += Double(g[i * qStride + h * d + c]) * Double(v[j * kStride + kh * d + c]) }
                }
                let delta = zip(p, dp).reduce(0) { $0 + $1.0 * $1.1 }
                for j in 0..<length where p[j] != 0 {
                    let ds = p[j] * (dp[j] - delta) * Double(l.scale)
                    for c in 0..<d {
                        dq[i * qStride + h * d + c] += ds * Double(k[j * kStride + kh * d + c])
                        dk[j * kStride + kh * d + c] += ds * Double(q[i * qStride + h * d + c])
                        dv[j * kStride + kh * d + c] += p[j] * Double(g[i * qStride + h * d + c])
                    }
                }
            }
        }
        let gq = backend.zeros([length, qStride], .f32, .workspace)
        let gk = backend.zeros([length, kStride], .f32, .workspace), gv = backend.zeros([length, kStride], .f32, .workspace)
        backend.attentionBackward(dq: gq, dk: gk, dv: gv, dOut: backend.tensor(g, [length, qStride]), q: backend.tensor(q, [length, qStride]),
                                  k: backend.tensor(k, [length, kStride]), v: backend.tensor(v, [length, kStride]), layout: l)
        assertClose(gq.floats, dq, tolerance: 1e-5, "dq")
        assertClose(gk.floats, dk, tolerance: 1e-5, "dk")
        assertClose(gv.floats, dv, tolerance: 1e-5, "dv")
    }

    // MARK: - GEMM and linear

    /// Random packed blocks whose f16 scales are small and positive.
    private func packedWeight(_ dtype: DType, rows: Int, columns: Int) -> Tensor {
        let t = backend.zeros([rows, columns], dtype, .weights)
        let bytes = t.rawPointer.assumingMemoryBound(to: UInt8.self)
        for i in 0..<t.byteCount {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            bytes[i] = UInt8(truncatingIfNeeded: seed >> 33)
        }
        let halves = dtype == .q4_1 ? 2 : 1
        for block in 0..<(t.byteCount / dtype.blockBytes) {
            for h in 0..<halves {
                (t.rawPointer + block * dtype.blockBytes + 2 * h).storeBytes(of: HalfPrecision.floatToF16(0.01 + 0.001 * Float(h)),
                                                                            as: UInt16.self)
            }
        }
        return t
    }

    func testLinearWithPackedWeightsByDotsAndByTilesMatchesWidenedWeights() {
        let inputs = 96, outputs = 600
        for dtype in [DType.q4_0, .q4_1, .q8_0] {
            let weight = packedWeight(dtype, rows: outputs, columns: inputs)
            let widened = backend.download(weight)
            for rows in [1, 3, 40] {
                let x = random(rows * inputs)
                let out = backend.zeros([rows, outputs], .f32, .workspace)
                backend.linear(out, backend.tensor(x, [rows, inputs]), weight, bias: nil)
                var expected = [Double](repeating: 0, count: rows * outputs)
                for r in 0..<rows {
                    for o in 0..<outputs {
                        for i in 0..<inputs { expected[r * outputs + o] += Double(x[r * inputs + i]) * Double(widened[o * inputs + i]) }
                    }
                }
                assertClose(out.floats, expected, tolerance: 1e-4, "\(dtype) × \(rows) rows")
            }
        }
    }

    /// An nf4 weight (rows of 512: two blocks) gives the products its decoded f32 copy gives, by
    /// dot products (1 and 3 rows) and by widened tiles (40 rows, 600 outputs: several tiles),
    /// forward and backward (dx =, then +=).
    func testLinearAndBackwardWithNF4WeightsMatchTheDecodedWeights() {
        let inputs = 512, outputs = 600
        let weight = backend.tensor(random(outputs * inputs, scale: 0.1), [outputs, inputs], .nf4)
        let decoded = backend.tensor(backend.download(weight), [outputs, inputs])
        for rows in [1, 3, 40] {
            let x = backend.tensor(random(rows * inputs), [rows, inputs]), dy = backend.tensor(random(rows * outputs), [rows, outputs])
            let out = backend.zeros([rows, outputs], .f32, .workspace), expected = backend.zeros([rows, outputs], .f32, .workspace)
            backend.linear(out, x, weight, bias: nil)
            backend.linear(expected, x, decoded, bias: nil)
            assertClose(out.floats, expected.floats.map(Double.init), tolerance: 2e-5, "nf4 forward × \(rows) rows")
            for accumulate in [false, true] {
                let dx = backend.tensor(random(rows * inputs), [rows, inputs]), expectedDx = backend.tensor(backend.download(dx), [rows, inputs])
                backend.linearBackward(dx: dx, dWeight: nil, dBias: nil, dy: dy, x: x, weight: weight, accumulate: accumulate)
                backend.linearBackward(dx: expectedDx, dWeight: nil, dBias: nil, dy: dy, x: x, weight: decoded, accumulate: accumulate)
                assertClose(dx.floats, expectedDx.floats.map(Double.init), tolerance: 2e-5,
                            "nf4 dx × \(rows) rows, accumulate \(accumulate)")
            }
        }
    }

    // MARK: - Cross-entropy

    func testCrossEntropyWithIgnoredTargetsGathersTheRest() {
        let rows = 150, width = 24, vocabulary = 300
        let hidden = random(rows * width), head = random(vocabulary * width)
        let targets = (0..<rows).map { Int32($0 % 3 == 0 ? -100 : ($0 * 37) % vocabulary) }
        let scale: Float = 0.01
        var loss = 0.0
        var dHidden = [Double](repeating: 0, count: rows * width), dHead = [Double](repeating: 0, count: vocabulary * width)
        for r in 0..<rows where targets[r] >= 0 {
            var z = [Double](repeating: 0, count: vocabulary)
            for o in 0..<vocabulary {
                for i in 0..<width { z[o] += Double(hidden[r * width + i]) * Double(head[o * width + i]) }
            }
            let maximum = z.max()!, total = z.reduce(0) { $0 + Foundation.exp($1 - maximum) }
            loss += Foundation.log(total) - (z[Int(targets[r])] - maximum)
            for o in 0..<vocabulary {
                let dz = (Foundation.exp(z[o] - maximum) / total - (o == Int(targets[r]) ? 1 : 0)) * Double(scale)
                for i in 0..<width {
                    dHidden[r * width + i] += dz * Double(head[o * width + i])
                    dHead[o * width + i] += dz * Double(hidden[r * width + i])
                }
            }
        }
        let gHidden = backend.tensor([Float](repeating: 9, count: rows * width), [rows, width])
        let gHead = backend.zeros([vocabulary, width], .f32, .gradients)
        let result = backend.crossEntropy(hidden: backend.tensor(hidden, [rows, width]), head: backend.tensor(head, [vocabulary, width]),
                                          targets: targets, dHidden: gHidden, dHead: gHead, gradientScale: scale)
        XCTAssertEqual(result, loss, accuracy: 1e-6 * loss)
        assertClose(gHidden.floats, dHidden, tolerance: 1e-6, "dHidden")
        assertClose(gHead.floats, dHead, tolerance: 1e-6, "dHead")
    }

    // MARK: - Memory and math

    func testReusedBuffersAreZeroedAgain() {
        let shape: Shape = [512, 1024]  // 2 MiB: from the page cache
        for round in 0..<3 {
            let t = backend.zeros(shape, .f32, .activations)
            XCTAssertTrue(t.floats.allSatisfy { $0 == 0 }, "round \(round)")
            t.floats.update(repeating: Float(round + 1))
        }
        XCTAssertEqual(backend.ledger.snapshot.current[.activations, default: 0], 0)
    }

    func testVectorExpIsWithinTwoUlpAndSaturates() {
        for x in stride(from: Float(-87), through: 88, by: 0.173) {
            let exact = Foundation.exp(Double(x))
            XCTAssertEqual(Double(VectorMath.exp(x)), exact, accuracy: 2.5e-7 * exact, "exp(\(x))")
        }
        XCTAssertEqual(VectorMath.exp(-Float.infinity), 0)
        XCTAssertEqual(VectorMath.exp(-100), 0)
        XCTAssertEqual(VectorMath.exp(Float(0)), 1)
        XCTAssertEqual(VectorMath.exp(100), .infinity)
    }
}
