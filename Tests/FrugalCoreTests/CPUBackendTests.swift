// Tests of the CPU backend's ops against plain reference loops.
import XCTest
import FrugalCore
@testable import FrugalCPU

final class CPUBackendTests: XCTestCase {
    let backend = CPUBackend()

    private func random(_ count: Int, seed: inout UInt64) -> [Float] {
        (0..<count).map { _ in
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: seed >> 11) % 2000) / 1000 - 1
        }
    }

    private func tensor(_ values: [Float], _ shape: Shape, _ dtype: DType = .f32) -> Tensor {
        backend.tensor(values, shape, dtype)
    }

    /// BLAS (one call for a small product, split across workers above the split threshold)
    /// against the Swift fallback, for every transpose.
    func testSgemmMatchesFallbackForEveryTranspose() throws {
        let blas = BLAS()
        try XCTSkipIf(blas.libraryPath == nil, "no BLAS library on this machine")
        var seed: UInt64 = 1
        for (m, n, k, tolerance) in [(7, 5, 9, Float(1e-4)), (300, 200, 64, 1e-3)] {
            let a = random(m * k, seed: &seed), b = random(k * n, seed: &seed)
            for ta in [false, true] {
                for tb in [false, true] {
                    var c1 = [Float](repeating: 0.5, count: m * n), c2 = c1
                    let lda = ta ? m : k, ldb = tb ? k : n
                    blas.sgemm(transposeA: ta, transposeB: tb, m: m, n: n, k: k, alpha: 2, a: a, lda: lda, b: b, ldb: ldb,
                               beta: 0.5, c: &c1, ldc: n)
                    BLAS.swiftOnly.sgemm(transposeA: ta, transposeB: tb, m: m, n: n, k: k, alpha: 2, a: a, lda: lda, b: b,
                                         ldb: ldb, beta: 0.5, c: &c2, ldc: n)
                    for i in 0..<(m * n) {
                        XCTAssertEqual(c1[i], c2[i], accuracy: tolerance, "\(m)×\(n)×\(k) ta \(ta) tb \(tb) at \(i)")
                    }
                }
            }
        }
    }

    func testLinearWithHalfWeightsMatchesWidenedWeights() {
        var seed: UInt64 = 2
        for rows in [1, 3, 9] {
            let inputs = 64, outputs = 300
            let x = random(rows * inputs, seed: &seed), w = random(outputs * inputs, seed: &seed)
            let bias = random(outputs, seed: &seed)
            for dtype in [DType.f16, .bf16] {
                let wt = tensor(w, [outputs, inputs], dtype)
                let widened = backend.download(wt)
                let out = backend.zeros([rows, outputs], .f32, .workspace)
                backend.linear(out, tensor(x, [rows, inputs]), wt, bias: tensor(bias, [outputs]))
                for r in 0..<rows {
                    for o in 0..<outputs {
                        var expected = bias[o]
                        for i in 0..<inputs { expected += x[r * inputs + i] * widened[o * inputs + i] }
                        XCTAssertEqual(out.floats[r * outputs + o], expected, accuracy: 1e-3)
                    }
                }
            }
        }
    }

    func testAttentionMatchesNaiveSoftmaxWithGroupedHeadsAndSegments() {
        var seed: UInt64 = 3
        let batch = 2, length = 5, heads = 4, kvHeads = 2, d = 8
        let q = random(batch * length * heads * d, seed: &seed)
        let k = random(batch * length * kvHeads * d, seed: &seed)
        let v = random(batch * length * kvHeads * d, seed: &seed)
        let segments: [Int32] = [0, 0, 0, 1, 1, 0, 0, 0, 0, 0]
        let layout = AttentionLayout(batch: batch, queryLength: length, keyLength: length, queryOffset: 0,
                                     heads: heads, kvHeads: kvHeads, headDim: d, scale: 0.3, segments: segments)
        let out = backend.zeros([batch * length, heads * d], .f32, .workspace)
        backend.attention(out, q: tensor(q, [batch * length, heads * d]), k: tensor(k, [batch * length, kvHeads * d]),
                          v: tensor(v, [batch * length, kvHeads * d]), layout: layout)
        for b in 0..<batch {
            for h in 0..<heads {
                for i in 0..<length {
                    let kh = h / (heads / kvHeads)
                    var weights = [Float]()
                    var keys = [Int]()
                    for j in 0...i where segments[b * length + j] == segments[b * length + i] {
                        var s: Float = 0
                        for c in 0..<d { s += q[((b * length + i) * heads + h) * d + c] * k[((b * length + j) * kvHeads + kh) * d + c] }
                        weights.append(exp(s * 0.3)); keys.append(j)
                    }
                    let total = weights.reduce(0, +)
                    for c in 0..<d {
                        var expected: Float = 0
                        for (w, j) in zip(weights, keys) { expected += w / total * v[((b * length + j) * kvHeads + kh) * d + c] }
                        XCTAssertEqual(out.floats[((b * length + i) * heads + h) * d + c], expected, accuracy: 1e-5)
                    }
                }
            }
        }
    }

    func testRopeRotatesPairsHalfAHeadApart() {
        let heads = 2, d = 4
        let x = tensor([1, 2, 3, 4, 5, 6, 7, 8], [1, heads * d])
        backend.rope(x, heads: heads, headDim: d, positions: [3], inverseFrequencies: [1, 0.5])
        let expected: [Float] = [1, 2, 3, 4, 5, 6, 7, 8]
        for h in 0..<heads {
            for i in 0..<2 {
                let angle = 3 * [Float(1), 0.5][i]
                let a = expected[h * d + i], b = expected[h * d + i + 2]
                XCTAssertEqual(x.floats[h * d + i], a * cos(angle) - b * sin(angle), accuracy: 1e-5)
                XCTAssertEqual(x.floats[h * d + i + 2], b * cos(angle) + a * sin(angle), accuracy: 1e-5)
            }
        }
    }

    func testLedgerTracksPeakByCategoryAndFreesOnRelease() {
        let backend = CPUBackend()
        do {
            let a = backend.zeros([256], .f32, .weights)
            let b = backend.zeros([128], .f32, .activations)
            XCTAssertEqual(backend.ledger.snapshot.current[.weights], 1024)
            XCTAssertEqual(backend.ledger.snapshot.current[.activations], 512)
            _ = (a, b)
        }
        let snapshot = backend.ledger.snapshot
        XCTAssertEqual(snapshot.current[.weights], 0)
        XCTAssertEqual(snapshot.peak[.weights], 1024)
        XCTAssertEqual(snapshot.peakTotal, 1536)
    }

    func testNormsMatchDefinitions() {
        let x = tensor([1, 2, 3, 4, -1, 0, 1, 2], [2, 4])
        let w = tensor([0.5, 1, 1.5, 2], [4]), b = tensor([0.1, 0.2, 0.3, 0.4], [4])
        let out = backend.zeros([2, 4], .f32, .workspace)
        backend.rmsNorm(out, x, w, eps: 1e-6, weightOffset: 1)
        let rms = (30.0 / 4 as Float).squareRoot()
        XCTAssertEqual(out.floats[2], 3 / rms * 2.5, accuracy: 1e-5)
        backend.layerNorm(out, x, w, b, eps: 1e-5)
        let std = (1.25 + 1e-5 as Float).squareRoot()
        XCTAssertEqual(out.floats[0], (1 - 2.5) / std * 0.5 + 0.1, accuracy: 1e-5)
    }

    /// The norms fused with the residual add equal the add then the norm, and write the sum
    /// (into its own tensor, or over x); without a sum tensor only the normed rows change.
    func testNormsFusedWithTheResidualAdd() {
        let xs: [Float] = [1, 2, 3, 4, -1, 0, 1, 2], rs: [Float] = [0.5, -1, 2, 0, 3, 1, -2, 0.25]
        let w = tensor([0.5, 1, 1.5, 2], [4]), b = tensor([0.1, 0.2, 0.3, 0.4], [4])
        let summed = tensor(zip(xs, rs).map(+), [2, 4])
        for layer in [false, true] {
            let expected = backend.zeros([2, 4], .f32, .workspace)
            if layer { backend.layerNorm(expected, summed, w, b, eps: 1e-5) } else {
                backend.rmsNorm(expected, summed, w, eps: 1e-6, weightOffset: 1)
            }
            let want = backend.download(expected), total = backend.download(summed)
            func fused(sum: Tensor?, x: Tensor) -> [Float] {
                let out = backend.zeros([2, 4], .f32, .workspace), r = tensor(rs, [2, 4])
                if layer { backend.layerNorm(out, sum: sum, x, residual: r, w, b, eps: 1e-5) } else {
                    backend.rmsNorm(out, sum: sum, x, residual: r, w, eps: 1e-6, weightOffset: 1)
                }
                return backend.download(out)
            }
            let sum = backend.zeros([2, 4], .f32, .workspace), x = tensor(xs, [2, 4])
            XCTAssertEqual(fused(sum: sum, x: x), want, "layer \(layer)")
            XCTAssertEqual(backend.download(sum), total)
            XCTAssertEqual(backend.download(x), xs, "x is left alone")
            XCTAssertEqual(fused(sum: nil, x: x), want)
            XCTAssertEqual(fused(sum: x, x: x), want, "sum over x")
            XCTAssertEqual(backend.download(x), total)
        }
    }
}
