// Tests of the CPU backend's backward ops against central finite differences of its forward
// ops, and of the optimizer and precision ops against hand-computed values.
import XCTest
import FrugalCore
@testable import FrugalCPU

final class BackwardTests: XCTestCase {
    let backend = CPUBackend()
    var seed: UInt64 = 1

    // MARK: - Helpers

    /// Uniform values in [-scale, scale).
    private func random(_ count: Int, scale: Float = 1) -> [Float] {
        (0..<count).map { _ in
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return (Float(seed >> 40) / Float(1 << 24) * 2 - 1) * scale
        }
    }

    private func tensor(_ values: [Float], _ shape: Shape, _ dtype: DType = .f32) -> Tensor {
        backend.tensor(values, shape, dtype)
    }

    /// A tensor filled with `value`, to tell overwritten (=) outputs from accumulated (+=) ones.
    private func filled(_ value: Float, _ shape: Shape) -> Tensor {
        tensor([Float](repeating: value, count: shape.count), shape)
    }

    /// `Σ r ⊙ out` in double precision.
    private func weighted(_ out: Tensor, _ r: [Float]) -> Double {
        zip(out.floats, r).reduce(0) { $0 + Double($1.0) * Double($1.1) }
    }

    /// Central differences of `loss` with respect to each element of the f32 tensor `input`,
    /// perturbed in place by ±h (the step actually taken in f32 is the denominator).
    private func numericGradient(_ input: Tensor, h: Float = 1e-3, _ loss: () -> Double) -> [Double] {
        let x = input.floats
        return (0..<x.count).map { i in
            let saved = x[i]
            let plus = saved + h, minus = saved - h
            x[i] = plus
            let up = loss()
            x[i] = minus
            let down = loss()
            x[i] = saved
            return (up - down) / (Double(plus) - Double(minus))
        }
    }

    /// `|analytic − offset − numeric| ≤ 1e-3 + 1e-2·|numeric|` element by element.
    private func assertClose(_ analytic: Tensor, _ numeric: [Double], minus offset: Float = 0, _ name: String,
                             file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(analytic.count, numeric.count, name, file: file, line: line)
        for (i, (a, n)) in zip(analytic.floats, numeric).enumerated() {
            let error = abs(Double(a - offset) - n)
            XCTAssertLessThanOrEqual(error, 1e-3 + 1e-2 * abs(n), "\(name)[\(i)]: analytic \(a - offset), numeric \(n)",
                                     file: file, line: line)
        }
    }

    // MARK: - Linear and embedding

    func testLinearBackwardMatchesFiniteDifferences() {
        let rows = 3, inputs = 5, outputs = 4
        let x = tensor(random(rows * inputs), [rows, inputs]), w = tensor(random(outputs * inputs), [outputs, inputs])
        let bias = tensor(random(outputs), [outputs]), r = random(rows * outputs)
        let out = backend.zeros([rows, outputs], .f32, .workspace)
        let loss = { self.backend.linear(out, x, w, bias: bias); return self.weighted(out, r) }
        let dx = filled(7, [rows, inputs]), dW = filled(0.25, [outputs, inputs]), dB = filled(-0.5, [outputs])
        backend.linearBackward(dx: dx, dWeight: dW, dBias: dB, dy: tensor(r, [rows, outputs]), x: x, weight: w)
        assertClose(dx, numericGradient(x, loss), "dx")
        assertClose(dW, numericGradient(w, loss), minus: 0.25, "dWeight")
        assertClose(dB, numericGradient(bias, loss), minus: -0.5, "dBias")
    }

    func testLinearBackwardThroughWidenedTilesOfHalfWeights() {
        let rows = 5, inputs = 8, outputs = 300
        let x = tensor(random(rows * inputs), [rows, inputs]), r = random(rows * outputs)
        for dtype in [DType.bf16, .f16] {
            let w = tensor(random(outputs * inputs), [outputs, inputs], dtype)
            let out = backend.zeros([rows, outputs], .f32, .workspace)
            let loss = { self.backend.linear(out, x, w, bias: nil); return self.weighted(out, r) }
            let dx = filled(7, [rows, inputs])
            backend.linearBackward(dx: dx, dWeight: nil, dBias: nil, dy: tensor(r, [rows, outputs]), x: x, weight: w)
            assertClose(dx, numericGradient(x, loss), "dx with \(dtype) weight")
        }
    }

    func testEmbeddingBackwardAccumulatesRepeatedTokens() {
        let vocabulary = 5, d = 3, tokens: [Int32] = [1, 3, 1, 0]
        let table = tensor(random(vocabulary * d), [vocabulary, d]), r = random(tokens.count * d)
        let out = backend.zeros([tokens.count, d], .f32, .workspace)
        let loss = { self.backend.embedding(out, table, tokens: tokens); return self.weighted(out, r) }
        let dTable = filled(1, [vocabulary, d])
        backend.embeddingBackward(dTable, dy: tensor(r, [tokens.count, d]), tokens: tokens)
        assertClose(dTable, numericGradient(table, loss), minus: 1, "dTable")
    }

    // MARK: - Norms

    func testRMSNormBackwardMatchesFiniteDifferences() {
        let rows = 3, n = 6
        for weightOffset: Float in [0, 1] {
            let x = tensor(random(rows * n), [rows, n]), w = tensor(random(n), [n]), r = random(rows * n)
            let out = backend.zeros([rows, n], .f32, .workspace)
            let loss = {
                self.backend.rmsNorm(out, x, w, eps: 1e-5, weightOffset: weightOffset)
                return self.weighted(out, r)
            }
            let dx = filled(7, [rows, n]), dW = filled(0.5, [n])
            backend.rmsNormBackward(dx: dx, dWeight: dW, dy: tensor(r, [rows, n]), x: x, weight: w, eps: 1e-5,
                                    weightOffset: weightOffset)
            assertClose(dx, numericGradient(x, loss), "dx, offset \(weightOffset)")
            assertClose(dW, numericGradient(w, loss), minus: 0.5, "dWeight, offset \(weightOffset)")
        }
    }

    func testLayerNormBackwardMatchesFiniteDifferences() {
        let rows = 3, n = 6
        let x = tensor(random(rows * n), [rows, n]), w = tensor(random(n), [n]), b = tensor(random(n), [n])
        let r = random(rows * n)
        let out = backend.zeros([rows, n], .f32, .workspace)
        let loss = { self.backend.layerNorm(out, x, w, b, eps: 1e-5); return self.weighted(out, r) }
        let dx = filled(7, [rows, n]), dW = filled(0.5, [n]), dB = filled(2, [n])
        backend.layerNormBackward(dx: dx, dWeight: dW, dBias: dB, dy: tensor(r, [rows, n]), x: x, weight: w, eps: 1e-5)
        assertClose(dx, numericGradient(x, loss), "dx")
        assertClose(dW, numericGradient(w, loss), minus: 0.5, "dWeight")
        assertClose(dB, numericGradient(b, loss), minus: 2, "dBias")
    }

    // MARK: - Attention

    func testRopeBackwardIsTheInverseRotation() {
        let tokens = 3, heads = 2, d = 8
        let positions: [Int32] = [0, 5, 11], frequencies: [Float] = [1, 0.3, 0.05]
        let x = tensor(random(tokens * heads * d), [tokens, heads * d]), r = random(tokens * heads * d)
        let out = backend.zeros([tokens, heads * d], .f32, .workspace)
        let loss = {
            self.backend.copy(out, at: 0, from: x)
            self.backend.rope(out, heads: heads, headDim: d, positions: positions, inverseFrequencies: frequencies)
            return self.weighted(out, r)
        }
        let dx = tensor(r, [tokens, heads * d])
        backend.ropeBackward(dx, heads: heads, headDim: d, positions: positions, inverseFrequencies: frequencies)
        assertClose(dx, numericGradient(x, loss), "dx")
    }

    func testAttentionBackwardWithGroupedHeadsCausalMaskAndSegments() {
        let segments: [Int32] = [0, 0, 1, 1, 1, 0, 0, 0, 0, -1]
        checkAttentionBackward(AttentionLayout(batch: 2, queryLength: 5, keyLength: 5, queryOffset: 0, heads: 4,
                                               kvHeads: 2, headDim: 4, scale: 0.5, segments: segments))
    }

    func testAttentionBackwardWithCachedKeys() {
        checkAttentionBackward(AttentionLayout(batch: 1, queryLength: 3, keyLength: 5, queryOffset: 2, heads: 2,
                                               kvHeads: 1, headDim: 4, scale: 0.5))
    }

    private func checkAttentionBackward(_ l: AttentionLayout) {
        let queryShape: Shape = [l.batch * l.queryLength, l.heads * l.headDim]
        let keyShape: Shape = [l.batch * l.keyLength, l.kvHeads * l.headDim]
        let q = tensor(random(queryShape.count, scale: 2), queryShape), r = random(queryShape.count)
        let k = tensor(random(keyShape.count, scale: 2), keyShape), v = tensor(random(keyShape.count), keyShape)
        let out = backend.zeros(queryShape, .f32, .workspace)
        let loss = { self.backend.attention(out, q: q, k: k, v: v, layout: l); return self.weighted(out, r) }
        let dq = filled(7, queryShape), dk = filled(7, keyShape), dv = filled(7, keyShape)
        backend.attentionBackward(dq: dq, dk: dk, dv: dv, dOut: tensor(r, queryShape), q: q, k: k, v: v, layout: l)
        assertClose(dq, numericGradient(q, loss), "dq")
        assertClose(dk, numericGradient(k, loss), "dk")
        assertClose(dv, numericGradient(v, loss), "dv")
    }

    // MARK: - Elementwise

    /// Values in ±[0.05, 3): away from relu's kink, wide enough to reach the tails.
    private func activationInputs(_ count: Int) -> [Float] {
        random(count, scale: 3).map { $0 < 0 ? min($0, -0.05) : max($0, 0.05) }
    }

    func testActivateBackwardMatchesFiniteDifferencesInPlace() {
        let count = 24
        for activation in [Activation.silu, .relu, .gelu, .geluTanh] {
            let x = tensor(activationInputs(count), [count]), r = random(count)
            let out = backend.zeros([count], .f32, .workspace)
            let loss = { self.backend.activate(out, x, activation); return self.weighted(out, r) }
            let gradient = tensor(r, [count])
            backend.activateBackward(dx: gradient, dy: gradient, x: x, activation)
            assertClose(gradient, numericGradient(x, loss), "dx of \(activation)")
        }
    }

    func testGatedBackwardMatchesFiniteDifferences() {
        let count = 24
        for activation in [Activation.silu, .relu, .gelu, .geluTanh] {
            let gate = tensor(activationInputs(count), [count]), up = tensor(random(count, scale: 2), [count])
            let r = random(count)
            let out = backend.zeros([count], .f32, .workspace)
            let loss = { self.backend.gated(out, gate: gate, up: up, activation); return self.weighted(out, r) }
            let dGate = filled(7, [count]), dUp = filled(7, [count])
            backend.gatedBackward(dGate: dGate, dUp: dUp, dy: tensor(r, [count]), gate: gate, up: up, activation)
            assertClose(dGate, numericGradient(gate, loss), "dGate of \(activation)")
            assertClose(dUp, numericGradient(up, loss), "dUp of \(activation)")
        }
    }

    // MARK: - Loss

    /// 70 rows span two chunks; the second chunk is all ignored, the first has ignored rows too.
    private func crossEntropyTargets(_ rows: Int, vocabulary: Int) -> [Int32] {
        (0..<rows).map { r in r >= 64 || r % 5 == 3 ? (r % 2 == 0 ? -100 : -1) : Int32((r * 7) % vocabulary) }
    }

    func testCrossEntropyBackwardMatchesFiniteDifferences() {
        let rows = 70, width = 4, vocabulary = 9, gradientScale: Float = 0.5
        let hidden = tensor(random(rows * width, scale: 2), [rows, width])
        let head = tensor(random(vocabulary * width, scale: 2), [vocabulary, width])
        let targets = crossEntropyTargets(rows, vocabulary: vocabulary)
        let loss = {
            Double(gradientScale) * self.backend.crossEntropy(hidden: hidden, head: head, targets: targets, dHidden: nil,
                                                              dHead: nil, gradientScale: 1)
        }
        let dHidden = filled(7, [rows, width]), dHead = filled(0.25, [vocabulary, width])
        _ = backend.crossEntropy(hidden: hidden, head: head, targets: targets, dHidden: dHidden, dHead: dHead,
                                 gradientScale: gradientScale)
        assertClose(dHidden, numericGradient(hidden, loss), "dHidden")
        assertClose(dHead, numericGradient(head, loss), minus: 0.25, "dHead")
        for r in 64..<rows {
            for c in 0..<width { XCTAssertEqual(dHidden.floats[r * width + c], 0, "ignored row \(r)") }
        }
    }

    func testCrossEntropyLossMatchesNaiveLogSoftmax() {
        let rows = 70, width = 4, vocabulary = 9
        let hidden = random(rows * width, scale: 2), targets = crossEntropyTargets(rows, vocabulary: vocabulary)
        for dtype in [DType.f32, .bf16] {
            let head = tensor(random(vocabulary * width, scale: 2), [vocabulary, width], dtype)
            let widened = backend.download(head)
            var expected: Double = 0
            for r in 0..<rows where targets[r] >= 0 {
                let logits = (0..<vocabulary).map { o in
                    (0..<width).reduce(0.0) { $0 + Double(hidden[r * width + $1]) * Double(widened[o * width + $1]) }
                }
                let logSum = log(logits.map { exp($0) }.reduce(0, +))
                expected += logSum - logits[Int(targets[r])]
            }
            let dHidden = filled(7, [rows, width])
            let loss = backend.crossEntropy(hidden: tensor(hidden, [rows, width]), head: head, targets: targets,
                                            dHidden: dHidden, dHead: nil, gradientScale: 1)
            XCTAssertEqual(loss, expected, accuracy: 1e-4 * abs(expected), "loss with a \(dtype) head")
        }
    }

    // MARK: - Optimizer and precision

    func testAdamWMatchesTwoHandComputedSteps() {
        let p0: [Float] = [1, -2, 0.5], g1: [Float] = [0.1, -0.3, 2], g2: [Float] = [-0.2, 0.05, 1]
        let lr = 0.01, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, wd = 0.1
        let parameter = tensor(p0, [3]), gradient = tensor(g1, [3])
        let m = backend.zeros([3], .f32, .optimizer), v = backend.zeros([3], .f32, .optimizer)
        var p = p0.map(Double.init), ms = [Double](repeating: 0, count: 3), vs = ms
        for (step, g) in [g1, g2].enumerated() {
            _ = gradient.floats.update(from: g)
            backend.adamW(parameter, gradient: gradient, m: m, v: v, step: step + 1, learningRate: Float(lr),
                          beta1: Float(beta1), beta2: Float(beta2), epsilon: Float(eps), weightDecay: Float(wd))
            for i in 0..<3 {
                let gi = Double(g[i])
                ms[i] = beta1 * ms[i] + (1 - beta1) * gi
                vs[i] = beta2 * vs[i] + (1 - beta2) * gi * gi
                let mHat = ms[i] / (1 - pow(beta1, Double(step + 1))), vHat = vs[i] / (1 - pow(beta2, Double(step + 1)))
                p[i] = p[i] * (1 - lr * wd) - lr * mHat / (vHat.squareRoot() + eps)
            }
        }
        for i in 0..<3 {
            XCTAssertEqual(Double(parameter.floats[i]), p[i], accuracy: 1e-6, "parameter \(i)")
            XCTAssertEqual(Double(m.floats[i]), ms[i], accuracy: 1e-6, "m \(i)")
            XCTAssertEqual(Double(v.floats[i]), vs[i], accuracy: 1e-7, "v \(i)")
        }
    }

    func testRoundInPlaceGivesHalfPrecisionValues() {
        let values = random(1000, scale: 100) + [1e-8, 70000, -3.14159, 0]
        for dtype in [DType.bf16, .f16] {
            let x = tensor(values, [values.count])
            backend.roundInPlace(x, to: dtype)
            for (i, value) in values.enumerated() {
                XCTAssertEqual(x.floats[i].bitPattern, HalfPrecision.round(value, to: dtype).bitPattern, "\(dtype) \(value)")
            }
        }
    }

    func testReductionsAndZero() {
        let count = 3 * CPUBackend.reductionBlock + 17
        let values = random(count)
        let x = tensor(values, [count])
        let expected = values.reduce(0.0) { $0 + Double($1) * Double($1) }
        XCTAssertEqual(backend.sumOfSquares(x), expected, accuracy: 1e-9 * expected)
        XCTAssertTrue(backend.allFinite(x))
        x.floats[count - 1] = .infinity
        XCTAssertFalse(backend.allFinite(x))
        x.floats[count - 1] = .nan
        XCTAssertFalse(backend.allFinite(x))
        backend.zero(x)
        XCTAssertEqual(backend.sumOfSquares(x), 0)
    }
}
