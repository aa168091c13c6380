// SixteenBitParameterTests: the optimizer ops on a parameter stored in bf16 or f16 (pure bf16's
// weights): each step equals the f32 op on the widened values followed by rounding to nearest
// even, bit for bit, step after step.

import Foundation
import XCTest
import FrugalCore
import FrugalCPU

final class SixteenBitParameterTests: XCTestCase {
    private let backend = CPUBackend()
    /// 70 000 values: several parallel chunks, and 274 8-bit blocks, the last partly padding.
    private let n = 70_000

    private func random(_ count: Int, scale: Float = 1, seed: UInt64) -> [Float] {
        var state = seed
        return (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return (Float(state >> 40) / Float(1 << 24) - 0.5) * 2 * scale
        }
    }

    private func f32(_ values: [Float], _ category: MemoryCategory) -> Tensor {
        values.withUnsafeBytes { backend.upload($0, [values.count], .f32, category) }
    }

    /// `values` rounded into a 16-bit tensor, and the same rounded values as an f32 tensor.
    private func pair(_ values: [Float], _ dtype: DType) -> (sixteen: Tensor, wide: Tensor) {
        let bits = values.map { dtype == .bf16 ? HalfPrecision.floatToBF16($0) : HalfPrecision.floatToF16($0) }
        let sixteen = bits.withUnsafeBytes { backend.upload($0, [values.count], dtype, .trainable) }
        return (sixteen, f32(values.map { HalfPrecision.round($0, to: dtype) }, .trainable))
    }

    private func bits(_ t: Tensor) -> [UInt32] { backend.download(t).map(\.bitPattern) }

    /// Runs `update` for five steps on a 16-bit parameter and on its f32 twin rounded after each
    /// step, and asserts the parameters (and whatever state `update` returns) agree bit for bit.
    private func assertMatchesRoundedF32(_ dtype: DType, _ what: String,
                                         update: (_ parameter: Tensor, _ gradient: Tensor, _ step: Int) -> Void) {
        let start = random(n, scale: 0.5, seed: 1)
        let (sixteen, wide) = pair(start, dtype)
        for step in 1...5 {
            let gradient = f32(random(n, scale: 0.01, seed: UInt64(10 + step)), .gradients)
            update(sixteen, gradient, step)
            update(wide, gradient, step)
            backend.roundInPlace(wide, to: dtype)
            XCTAssertEqual(bits(sixteen), bits(wide), "\(what) \(dtype.rawValue): step \(step)")
        }
        XCTAssertNotEqual(bits(sixteen), start.map { HalfPrecision.round($0, to: dtype).bitPattern }, "\(what): nothing moved")
    }

    func testAdamWOnASixteenBitParameterIsTheRoundedF32Step() {
        for dtype in [DType.bf16, .f16] {
            // One pair of moments per parameter: each run keeps its own.
            var moments = [ObjectIdentifier: (Tensor, Tensor)]()
            assertMatchesRoundedF32(dtype, "adamW") { p, g, step in
                let (m, v) = moments[ObjectIdentifier(p.storage)] ?? (backend.zeros([n], .f32, .optimizer),
                                                                     backend.zeros([n], .f32, .optimizer))
                moments[ObjectIdentifier(p.storage)] = (m, v)
                backend.adamW(p, gradient: g, m: m, v: v, step: step, learningRate: 1e-2, beta1: 0.9, beta2: 0.999,
                              epsilon: 1e-8, weightDecay: 0.01)
            }
            let states = Array(moments.values)
            XCTAssertEqual(bits(states[0].0), bits(states[1].0), "adamW \(dtype.rawValue): m")
            XCTAssertEqual(bits(states[0].1), bits(states[1].1), "adamW \(dtype.rawValue): v")
        }
    }

    func testAdamW8bitOnASixteenBitParameterIsTheRoundedF32Step() {
        let padded: Shape = [DynamicQuantization.paddedCount(n)]
        for dtype in [DType.bf16, .f16] {
            var moments = [ObjectIdentifier: (Tensor, Tensor)]()
            assertMatchesRoundedF32(dtype, "adamW8bit") { p, g, step in
                let (m, v) = moments[ObjectIdentifier(p.storage)] ?? (backend.zeros(padded, .dynamic8, .optimizer),
                                                                     backend.zeros(padded, .dynamic8Unsigned, .optimizer))
                moments[ObjectIdentifier(p.storage)] = (m, v)
                backend.adamW8bit(p, gradient: g, m: m, v: v, step: step, learningRate: 1e-2, beta1: 0.9, beta2: 0.999,
                                  epsilon: 1e-8, weightDecay: 0.01)
            }
            let states = Array(moments.values)
            XCTAssertEqual(backend.downloadBytes(states[0].0), backend.downloadBytes(states[1].0), "adamW8bit: m")
            XCTAssertEqual(backend.downloadBytes(states[0].1), backend.downloadBytes(states[1].1), "adamW8bit: v")
        }
    }

    func testSGDOnASixteenBitParameterIsTheRoundedF32Step() {
        for dtype in [DType.bf16, .f16] {
            var buffers = [ObjectIdentifier: Tensor]()
            assertMatchesRoundedF32(dtype, "sgd") { p, g, _ in
                let b = buffers[ObjectIdentifier(p.storage)] ?? backend.zeros([n], .f32, .optimizer)
                buffers[ObjectIdentifier(p.storage)] = b
                backend.sgd(p, gradient: g, momentumBuffer: b, learningRate: 0.5, momentum: 0.9, weightDecay: 0.01)
            }
            let states = Array(buffers.values)
            XCTAssertEqual(bits(states[0]), bits(states[1]), "sgd \(dtype.rawValue): momentum")
        }
    }
}
