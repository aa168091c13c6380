// Tests of the CPU ops on 16-bit (bf16, f16) activations: each op on 16-bit inputs against the
// same op in f32 on the widened inputs. The CPU backend runs the very same f32 arithmetic on
// the widened values (same summation order), so the agreement is exact: a 16-bit output equals
// the f32 result rounded to nearest even, bit for bit, and an f32 gradient equals the f32 one.
import XCTest
import FrugalCore
@testable import FrugalCPU

final class ActivationDTypeTests: XCTestCase {
    let backend = CPUBackend()
    let halves: [DType] = [.bf16, .f16]
    private var seed: UInt64 = 7

    private func random(_ count: Int, scale: Float = 1) -> [Float] {
        (0..<count).map { _ in
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return (Float(Int64(bitPattern: seed >> 11) % 2000) / 1000 - 1) * scale
        }
    }

    /// `values` rounded to `dtype`, as a `dtype` tensor and as an f32 tensor of the same values.
    private func pair(_ values: [Float], _ shape: Shape, _ dtype: DType) -> (half: Tensor, wide: Tensor) {
        let half = backend.tensor(values, shape, dtype)
        return (half, backend.tensor(backend.download(half), shape))
    }

    private func f32(_ values: [Float], _ shape: Shape) -> Tensor { backend.tensor(values, shape) }

    /// A copy of an f32 tensor (the second run's gradient accumulators start equal).
    private func clone(_ t: Tensor) -> Tensor { f32(backend.download(t), t.shape) }

    /// `half` (16-bit) holds exactly `wide`'s f32 values rounded to nearest even.
    private func assertRounded(_ half: Tensor, _ wide: Tensor, _ what: String, file: StaticString = #filePath,
                               line: UInt = #line) {
        XCTAssertEqual(half.count, wide.count, what, file: file, line: line)
        let got = backend.download(half), expected = backend.download(wide).map { HalfPrecision.round($0, to: half.dtype) }
        let mismatches = zip(got, expected).filter { $0.bitPattern != $1.bitPattern }.count
        XCTAssertEqual(mismatches, 0, "\(what) \(half.dtype): \(mismatches) of \(got.count) values differ", file: file, line: line)
    }

    /// Two f32 tensors hold the same bits.
    private func assertSame(_ a: Tensor, _ b: Tensor, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        let x = backend.download(a), y = backend.download(b)
        let mismatches = zip(x, y).filter { $0.bitPattern != $1.bitPattern }.count
        XCTAssertEqual(x.count, y.count, what, file: file, line: line)
        XCTAssertEqual(mismatches, 0, "\(what): \(mismatches) of \(x.count) values differ", file: file, line: line)
    }

    // MARK: - Linear

    func testLinearMatchesRoundedF32() {
        let inputs = 64, outputs = 48
        for dtype in halves {
            for rows in [3, 9] {
                for weightDType in [DType.f32, .bf16, .q8_0] {
                    let x = pair(random(rows * inputs), [rows, inputs], dtype)
                    let w = backend.tensor(random(outputs * inputs), [outputs, inputs], weightDType)
                    let bias = backend.tensor(random(outputs), [outputs], .bf16)
                    let out = backend.empty([rows, outputs], dtype, .workspace)
                    let reference = backend.empty([rows, outputs], .f32, .workspace)
                    backend.linear(out, x.half, w, bias: bias)
                    backend.linear(reference, x.wide, w, bias: bias)
                    assertRounded(out, reference, "linear rows \(rows) weight \(weightDType)")
                }
            }
        }
    }

    /// `+=` into a 16-bit output reads it, adds in f32 and rounds once (f32 and packed weights).
    func testLinearAccumulatesIntoHalfOutput() {
        let rows = 9, inputs = 64, outputs = 40
        for dtype in halves {
            for weightDType in [DType.f32, .q8_0] {
                let x = pair(random(rows * inputs), [rows, inputs], dtype)
                let w = backend.tensor(random(outputs * inputs), [outputs, inputs], weightDType)
                let out = pair(random(rows * outputs, scale: 4), [rows, outputs], dtype)
                backend.linear(out.half, x.half, w, bias: nil, accumulate: true)
                backend.linear(out.wide, x.wide, w, bias: nil, accumulate: true)
                assertRounded(out.half, out.wide, "linear += weight \(weightDType)")
            }
        }
    }

    func testLinearBackwardReadsHalfInput() {
        let rows = 7, inputs = 32, outputs = 24
        for dtype in halves {
            let x = pair(random(rows * inputs), [rows, inputs], dtype)
            let w = f32(random(outputs * inputs), [outputs, inputs]), dy = f32(random(rows * outputs), [rows, outputs])
            let dx = backend.empty([rows, inputs], .f32, .workspace), dxRef = backend.empty([rows, inputs], .f32, .workspace)
            let dw = f32(random(outputs * inputs), [outputs, inputs]), dwRef = clone(dw)
            let db = f32(random(outputs), [outputs]), dbRef = clone(db)
            backend.linearBackward(dx: dx, dWeight: dw, dBias: db, dy: dy, x: x.half, weight: w)
            backend.linearBackward(dx: dxRef, dWeight: dwRef, dBias: dbRef, dy: dy, x: x.wide, weight: w)
            assertSame(dx, dxRef, "linearBackward dx \(dtype)")
            assertSame(dw, dwRef, "linearBackward dWeight \(dtype)")
            assertSame(db, dbRef, "linearBackward dBias \(dtype)")
        }
    }

    // MARK: - Norms

    /// `x + residual` in f32, rounded to `dtype`: the sum a 16-bit norm stores and normalizes.
    private func roundedSum(_ x: Tensor, _ residual: Tensor, _ dtype: DType) -> Tensor {
        let h = backend.empty(x.shape, .f32, .workspace)
        backend.add(h, x, residual)
        backend.roundInPlace(h, to: dtype)
        return h
    }

    /// With a residual, the 16-bit norm is the f32 norm of the rounded sum (what `sum` stores and
    /// backward differentiates), rounded.
    func testRMSNormWithResidualAndSumMatchesRoundedF32() {
        let rows = 5, n = 96
        for dtype in halves {
            let x = pair(random(rows * n, scale: 3), [rows, n], dtype), r = pair(random(rows * n), [rows, n], dtype)
            let w = backend.tensor(random(n), [n], .bf16)
            let out = backend.empty([rows, n], dtype, .workspace), sum = backend.empty([rows, n], dtype, .workspace)
            let outRef = backend.empty([rows, n], .f32, .workspace), h = roundedSum(x.wide, r.wide, dtype)
            backend.rmsNorm(out, sum: sum, x.half, residual: r.half, w, eps: 1e-5, weightOffset: 1)
            backend.rmsNorm(outRef, h, w, eps: 1e-5, weightOffset: 1)
            assertRounded(out, outRef, "rmsNorm out")
            assertRounded(sum, h, "rmsNorm sum")

            // Without `sum`, and alone with out aliasing x.
            backend.rmsNorm(out, sum: nil, x.half, residual: r.half, w, eps: 1e-5, weightOffset: 0)
            backend.rmsNorm(outRef, h, w, eps: 1e-5, weightOffset: 0)
            assertRounded(out, outRef, "rmsNorm out, residual without sum")
            backend.rmsNorm(x.half, x.half, w, eps: 1e-5, weightOffset: 0)
            backend.rmsNorm(x.wide, x.wide, w, eps: 1e-5, weightOffset: 0)
            assertRounded(x.half, x.wide, "rmsNorm in place")
        }
    }

    /// `sum` aliasing `x`: the residual stream updated in place, as a decoder layer does.
    func testNormsWithSumAliasingX() {
        let rows = 4, n = 64
        for dtype in halves {
            let x = pair(random(rows * n, scale: 2), [rows, n], dtype), r = pair(random(rows * n), [rows, n], dtype)
            let w = f32(random(n), [n]), b = f32(random(n), [n])
            let out = backend.empty([rows, n], dtype, .workspace), outRef = backend.empty([rows, n], .f32, .workspace)
            var h = roundedSum(x.wide, r.wide, dtype)
            backend.layerNorm(out, sum: x.half, x.half, residual: r.half, w, b, eps: 1e-5)
            backend.layerNorm(outRef, h, w, b, eps: 1e-5)
            assertRounded(out, outRef, "layerNorm out")
            assertRounded(x.half, h, "layerNorm sum into x")
            h = roundedSum(h, r.wide, dtype)
            backend.rmsNorm(out, sum: x.half, x.half, residual: r.half, w, eps: 1e-6, weightOffset: 0)
            backend.rmsNorm(outRef, h, w, eps: 1e-6, weightOffset: 0)
            assertRounded(out, outRef, "rmsNorm out")
            assertRounded(x.half, h, "rmsNorm sum into x")
        }
    }

    func testLayerNormMatchesRoundedF32() {
        let rows = 6, n = 80
        for dtype in halves {
            let x = pair(random(rows * n, scale: 3), [rows, n], dtype)
            let w = backend.tensor(random(n), [n], .f16), b = f32(random(n), [n])
            let out = backend.empty([rows, n], dtype, .workspace), outRef = backend.empty([rows, n], .f32, .workspace)
            backend.layerNorm(out, x.half, w, b, eps: 1e-5)
            backend.layerNorm(outRef, x.wide, w, b, eps: 1e-5)
            assertRounded(out, outRef, "layerNorm")
        }
    }

    func testNormBackwardsReadHalfInput() {
        let rows = 5, n = 48
        for dtype in halves {
            let x = pair(random(rows * n, scale: 2), [rows, n], dtype)
            let w = f32(random(n), [n]), dy = f32(random(rows * n), [rows, n])
            let dx = backend.empty([rows, n], .f32, .workspace), dxRef = backend.empty([rows, n], .f32, .workspace)
            let dw = f32(random(n), [n]), dwRef = clone(dw), db = f32(random(n), [n]), dbRef = clone(db)
            backend.rmsNormBackward(dx: dx, dWeight: dw, dy: dy, x: x.half, weight: w, eps: 1e-5, weightOffset: 1)
            backend.rmsNormBackward(dx: dxRef, dWeight: dwRef, dy: dy, x: x.wide, weight: w, eps: 1e-5, weightOffset: 1)
            assertSame(dx, dxRef, "rmsNormBackward dx \(dtype)")
            assertSame(dw, dwRef, "rmsNormBackward dWeight \(dtype)")
            backend.layerNormBackward(dx: dx, dWeight: dw, dBias: db, dy: dy, x: x.half, weight: w, eps: 1e-5)
            backend.layerNormBackward(dx: dxRef, dWeight: dwRef, dBias: dbRef, dy: dy, x: x.wide, weight: w, eps: 1e-5)
            assertSame(dx, dxRef, "layerNormBackward dx \(dtype)")
            assertSame(dw, dwRef, "layerNormBackward dWeight \(dtype)")
            assertSame(db, dbRef, "layerNormBackward dBias \(dtype)")
        }
    }

    // MARK: - Attention

    func testRopeMatchesRoundedF32() {
        let tokens = 6, heads = 3, headDim = 16
        let positions: [Int32] = [0, 1, 2, 7, 3, 40], frequencies = (0..<6).map { 1 / pow(10_000, Float($0) / 6) }
        for dtype in halves {
            let x = pair(random(tokens * heads * headDim, scale: 2), [tokens, heads * headDim], dtype)
            backend.rope(x.half, heads: heads, headDim: headDim, positions: positions, inverseFrequencies: frequencies)
            backend.rope(x.wide, heads: heads, headDim: headDim, positions: positions, inverseFrequencies: frequencies)
            assertRounded(x.half, x.wide, "rope")
        }
    }

    /// A causal prefill over two sequences with packing segments, and one decoding step.
    private let layouts = [
        AttentionLayout(batch: 2, queryLength: 5, keyLength: 5, queryOffset: 0, heads: 4, kvHeads: 2, headDim: 8,
                        scale: 1 / Float(8).squareRoot(), segments: [0, 0, 1, 1, 1, 0, 0, 0, -1, -1]),
        AttentionLayout(batch: 1, queryLength: 1, keyLength: 6, queryOffset: 5, heads: 4, kvHeads: 2, headDim: 8,
                        scale: 1 / Float(8).squareRoot()),
    ]

    func testAttentionMatchesRoundedF32() {
        for dtype in halves {
            for l in layouts {
                let qCount = l.batch * l.queryLength * l.heads * l.headDim, kCount = l.batch * l.keyLength * l.kvHeads * l.headDim
                let q = pair(random(qCount, scale: 2), [l.batch * l.queryLength, l.heads * l.headDim], dtype)
                let k = pair(random(kCount, scale: 2), [l.batch * l.keyLength, l.kvHeads * l.headDim], dtype)
                let v = pair(random(kCount), [l.batch * l.keyLength, l.kvHeads * l.headDim], dtype)
                let out = backend.empty(q.half.shape, dtype, .workspace), outRef = backend.empty(q.half.shape, .f32, .workspace)
                backend.attention(out, q: q.half, k: k.half, v: v.half, layout: l)
                backend.attention(outRef, q: q.wide, k: k.wide, v: v.wide, layout: l)
                assertRounded(out, outRef, "attention queries \(l.queryLength)")
            }
        }
    }

    func testAttentionBackwardReadsHalfInputs() {
        let l = layouts[0]
        for dtype in halves {
            let qShape: Shape = [l.batch * l.queryLength, l.heads * l.headDim], kShape: Shape = [l.batch * l.keyLength, l.kvHeads * l.headDim]
            let q = pair(random(qShape.count, scale: 2), qShape, dtype), k = pair(random(kShape.count, scale: 2), kShape, dtype)
            let v = pair(random(kShape.count), kShape, dtype), dOut = f32(random(qShape.count), qShape)
            let out = backend.empty(qShape, dtype, .workspace), outRef = backend.empty(qShape, .f32, .workspace)
            backend.attention(out, q: q.half, k: k.half, v: v.half, layout: l)
            backend.attention(outRef, q: q.wide, k: k.wide, v: v.wide, layout: l)
            let grads = (0..<6).map { backend.empty($0 % 3 == 0 ? qShape : kShape, .f32, .workspace) }
            backend.attentionBackward(dq: grads[0], dk: grads[1], dv: grads[2], dOut: dOut, q: q.half, k: k.half, v: v.half,
                                      layout: l, out: out, logSumExp: nil)
            backend.attentionBackward(dq: grads[3], dk: grads[4], dv: grads[5], dOut: dOut, q: q.wide, k: k.wide, v: v.wide,
                                      layout: l, out: outRef, logSumExp: nil)
            for (i, name) in ["dq", "dk", "dv"].enumerated() { assertSame(grads[i], grads[i + 3], "attentionBackward \(name) \(dtype)") }
        }
    }

    // MARK: - Elementwise

    /// More values than one stack block, and not a multiple of the 8 SIMD lanes.
    private let count = 5003

    func testElementwiseOpsMatchRoundedF32() {
        for dtype in halves {
            let a = pair(random(count, scale: 4), [count], dtype), b = pair(random(count, scale: 4), [count], dtype)
            let out = backend.empty([count], dtype, .workspace), outRef = backend.empty([count], .f32, .workspace)
            backend.add(out, a.half, b.half)
            backend.add(outRef, a.wide, b.wide)
            assertRounded(out, outRef, "add")
            backend.multiply(out, a.half, b.half)
            backend.multiply(outRef, a.wide, b.wide)
            assertRounded(out, outRef, "multiply")
            for activation in [Activation.silu, .relu, .geluTanh, .gelu] {
                backend.activate(out, a.half, activation)
                backend.activate(outRef, a.wide, activation)
                assertRounded(out, outRef, "activate \(activation)")
                backend.gated(out, gate: a.half, up: b.half, activation)
                backend.gated(outRef, gate: a.wide, up: b.wide, activation)
                assertRounded(out, outRef, "gated \(activation)")
            }
            backend.scale(a.half, by: 0.3)
            backend.scale(a.wide, by: 0.3)
            assertRounded(a.half, a.wide, "scale")
        }
    }

    /// Outputs aliasing inputs: `activate` with out == x, `gated` with out == gate, `add` with out == a.
    func testElementwiseInPlace() {
        for dtype in halves {
            let x = pair(random(count, scale: 4), [count], dtype), up = pair(random(count), [count], dtype)
            backend.activate(x.half, x.half, .silu)
            backend.activate(x.wide, x.wide, .silu)
            assertRounded(x.half, x.wide, "activate in place")
            backend.copy(x.wide, at: 0, from: x.half)  // each op reads the rounded x
            backend.gated(x.half, gate: x.half, up: up.half, .geluTanh)
            backend.gated(x.wide, gate: x.wide, up: up.wide, .geluTanh)
            assertRounded(x.half, x.wide, "gated in place")
            backend.copy(x.wide, at: 0, from: x.half)
            backend.add(x.half, x.half, up.half)
            backend.add(x.wide, x.wide, up.wide)
            assertRounded(x.half, x.wide, "add in place")
        }
    }

    func testActivationBackwardsReadHalfInputs() {
        for dtype in halves {
            let gate = pair(random(count, scale: 4), [count], dtype), up = pair(random(count), [count], dtype)
            let dy = f32(random(count), [count])
            for activation in [Activation.silu, .relu, .geluTanh, .gelu] {
                let grads = (0..<4).map { _ in backend.empty([count], .f32, .workspace) }
                backend.activateBackward(dx: grads[0], dy: dy, x: gate.half, activation)
                backend.activateBackward(dx: grads[1], dy: dy, x: gate.wide, activation)
                assertSame(grads[0], grads[1], "activateBackward \(activation) \(dtype)")
                backend.gatedBackward(dGate: grads[0], dUp: grads[1], dy: dy, gate: gate.half, up: up.half, activation)
                backend.gatedBackward(dGate: grads[2], dUp: grads[3], dy: dy, gate: gate.wide, up: up.wide, activation)
                assertSame(grads[0], grads[2], "gatedBackward dGate \(activation) \(dtype)")
                assertSame(grads[1], grads[3], "gatedBackward dUp \(activation) \(dtype)")
                // Written in 16 bits (the GEMMs' operand dtype on a GPU): the f32 gradients rounded.
                let rounded = (0..<2).map { _ in backend.empty([count], dtype, .workspace) }
                backend.activateBackward(dx: rounded[0], dy: dy, x: gate.half, activation)
                backend.activateBackward(dx: grads[0], dy: dy, x: gate.half, activation)
                assertRounded(rounded[0], grads[0], "activateBackward into \(dtype), \(activation)")
                backend.gatedBackward(dGate: rounded[0], dUp: rounded[1], dy: dy, gate: gate.half, up: up.half, activation)
                assertRounded(rounded[0], grads[2], "gatedBackward dGate into \(dtype), \(activation)")
                assertRounded(rounded[1], grads[3], "gatedBackward dUp into \(dtype), \(activation)")
            }
        }
    }

    // MARK: - Copy

    /// f32 into 16 bits rounds to nearest even: ties go to the even neighbour, values past a
    /// tie go up, and a value the format holds (1 + 2⁻⁹ in f16) stays exact.
    func testCopyIntoHalfRoundsToNearestEven() {
        let cases: [(DType, Float, Float)] = [
            // bf16: 7 fraction bits, ulp 2⁻⁷ at 1.
            (.bf16, 1 + 0x1p-9, 1),
            (.bf16, 1 + 0x1p-8, 1),  // tie, to even
            (.bf16, 1 + 3 * 0x1p-8, 1 + 0x1p-6),  // tie, to even (up)
            (.bf16, 1 + 0x1p-8 + 0x1p-20, 1 + 0x1p-7),  // past the tie
            (.bf16, -(1 + 0x1p-8), -1),
            // f16: 10 fraction bits, ulp 2⁻¹⁰ at 1.
            (.f16, 1 + 0x1p-9, 1 + 0x1p-9),
            (.f16, 1 + 0x1p-11, 1),  // tie, to even
            (.f16, 1 + 3 * 0x1p-11, 1 + 0x1p-9),  // tie, to even (up)
            (.f16, 1 + 0x1p-11 + 0x1p-20, 1 + 0x1p-10),  // past the tie
        ]
        for dtype in halves {
            let mine = cases.filter { $0.0 == dtype }
            let dst = backend.zeros([mine.count + 3], dtype, .workspace)
            backend.copy(dst, at: 3, from: f32(mine.map { $0.1 }, [mine.count]))
            let got = backend.download(dst)
            XCTAssertEqual(Array(got[0..<3]), [0, 0, 0], "copy into \(dtype) wrote before its offset")
            for (i, c) in mine.enumerated() {
                XCTAssertEqual(got[3 + i].bitPattern, c.2.bitPattern, "\(dtype) copy of \(c.1): \(got[3 + i]), want \(c.2)")
            }
            // Random values: the same rounding as HalfPrecision; and back into f32, exactly.
            let values = random(count, scale: 100)
            let half = backend.empty([count], dtype, .workspace), back = backend.empty([count], .f32, .workspace)
            backend.copy(half, at: 0, from: f32(values, [count]))
            assertRounded(half, f32(values, [count]), "copy f32 into 16 bits")
            backend.copy(back, at: 0, from: half)
            XCTAssertEqual(backend.download(back), backend.download(half), "copy \(dtype) into f32")
        }
    }
}
