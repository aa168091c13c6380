// AdamW8bitTests: the CPU's 8-bit AdamW step equals a plain reference (decode the moments, the f32
// AdamW step, encode by scanning the map) bit for bit, and wild gradients over many steps keep
// every value finite and every step bounded.
import Foundation
import XCTest
import FrugalCore
import FrugalCPU

final class AdamW8bitTests: XCTestCase {
    let backend = CPUBackend()
    var seed: UInt64 = 11

    /// Uniform in [0, 1).
    private func uniform() -> Float {
        seed = seed &* 6364136223846793005 &+ 1442695040888963407
        return Float(seed >> 40) / Float(1 << 24)
    }

    /// `values` of a parameter of `count` values (zero past `count`, to whole blocks) encoded the
    /// plain way: per block absmax = max |x|, each code the first nearest entry of a scan of the map
    /// among those of the value's sign (0 only for 0).
    private func referenceEncode(_ values: [Float], count: Int, _ dtype: DType) -> [UInt8] {
        let map = DynamicQuantization.map(dtype)
        var bytes = [UInt8]()
        for start in stride(from: 0, to: values.count, by: 256) {
            let block = Array(values[start..<start + 256])
            let absmax = block.prefix(count - start).map(abs).max()!
            withUnsafeBytes(of: absmax) { bytes += $0 }
            for (i, x) in block.enumerated() {
                let y = start + i < count && absmax > 0 ? x / absmax : 0
                let codes = map.indices.filter { y == 0 || (map[$0] != 0 && (map[$0] > 0) == (y > 0)) }
                bytes.append(UInt8(codes.min { abs(map[$0] - y) < abs(map[$1] - y) }!))
            }
        }
        return bytes
    }

    /// Six steps over 1000 values (three whole blocks and a part): gradients spread over four
    /// decades, one block's zero for the first two steps. Each step starts the reference from the
    /// op's own state, decodes it, runs `adamW`, encodes: parameter and codes must match exactly.
    func testStepEqualsDecodeThenAdamWThenEncode() {
        let n = 1000, padded = DynamicQuantization.paddedCount(n)
        let p = backend.tensor((0..<n).map { _ in uniform() * 2 - 1 }, [n])
        let m = backend.zeros([padded], .dynamic8, .optimizer), v = backend.zeros([padded], .dynamic8Unsigned, .optimizer)
        for step in 1...6 {
            let g = backend.tensor((0..<n).map { i in
                (512..<768).contains(i) && step <= 2 ? 0 : (uniform() * 2 - 1) * Float(pow(10, -4 * Double(uniform())))
            }, [n])
            let pRef = backend.tensor(backend.download(p), [n])
            let mRef = backend.tensor(Array(backend.download(m).prefix(n)), [n])
            let vRef = backend.tensor(Array(backend.download(v).prefix(n)), [n])
            backend.adamW(pRef, gradient: g, m: mRef, v: vRef, step: step, learningRate: 1e-2, beta1: 0.9, beta2: 0.999,
                          epsilon: 1e-8, weightDecay: 0.1)
            backend.adamW8bit(p, gradient: g, m: m, v: v, step: step, learningRate: 1e-2, beta1: 0.9, beta2: 0.999,
                              epsilon: 1e-8, weightDecay: 0.1)
            XCTAssertEqual(backend.download(p).map(\.bitPattern), backend.download(pRef).map(\.bitPattern), "step \(step): p")
            let tail = [Float](repeating: 0, count: padded - n)
            XCTAssertEqual(backend.downloadBytes(m), referenceEncode(backend.download(mRef) + tail, count: n, .dynamic8),
                           "step \(step): m")
            XCTAssertEqual(backend.downloadBytes(v), referenceEncode(backend.download(vRef) + tail, count: n, .dynamic8Unsigned),
                           "step \(step): v")
        }
        XCTAssertGreaterThan(backend.download(m).map(abs).max()!, 0, "the moments moved")
    }

    /// 1500 steps over 8 blocks. Four blocks hold gradients no optimizer should meet: Cauchy-
    /// distributed, zero except every 97th step, from 10⁻¹² to 10⁴ at random in one block, and
    /// 10⁻²⁰ (squares below f32's normal range); there every parameter and decoded moment must stay
    /// finite, v non-negative, and no step exceed 10·lr (measured 3·lr; with bitsandbytes'
    /// rounding of tiny v to 0, steps of lr·m̂/ε reached 10⁵). Four blocks hold noisy gradients
    /// with scales spread over two decades: there no step exceeds 5·lr (measured 1.4·lr).
    func testWildGradientsKeepEverythingFinite() {
        let n = 2048, lr: Float = 1e-3
        let p = backend.tensor([Float](repeating: 0.5, count: n), [n])
        let m = backend.zeros([n], .dynamic8, .optimizer), v = backend.zeros([n], .dynamic8Unsigned, .optimizer)
        let scales = (0..<n).map { _ in Float(pow(10, -2 * Double(uniform()))) }
        var largestWild: Float = 0, largestNoisy: Float = 0
        for step in 1...1500 {
            let values: [Float] = (0..<n).map { i in
                let u = uniform(), sign: Float = uniform() < 0.5 ? -1 : 1
                switch i / 256 {
                case 0: return 1e-3 * Float(tan(Double.pi * (Double(u) - 0.5)))
                case 1: return step % 97 == 0 ? sign * u : 0
                case 2: return sign * Float(pow(10, -12 + 16 * Double(u)))
                case 3: return sign * 1e-20
                default: return scales[i] * (u + uniform() + uniform() - 1.5)
                }
            }
            let before = backend.download(p)
            backend.adamW8bit(p, gradient: backend.tensor(values, [n]), m: m, v: v, step: step, learningRate: lr, beta1: 0.9,
                              beta2: 0.999, epsilon: 1e-8, weightDecay: 0.01)
            guard backend.allFinite(p) else { return XCTFail("step \(step): a parameter is not finite") }
            for (i, (a, b)) in zip(before, backend.download(p)).enumerated() {
                if i < 1024 { largestWild = max(largestWild, abs(a - b)) } else { largestNoisy = max(largestNoisy, abs(a - b)) }
            }
        }
        let moments = backend.download(m), second = backend.download(v)
        XCTAssertTrue(moments.allSatisfy(\.isFinite) && second.allSatisfy { $0.isFinite && $0 >= 0 })
        print("8-bit AdamW, 1500 steps (lr \(lr)): largest single-step change \(largestNoisy) on noisy gradients, \(largestWild) on wild ones")
        XCTAssertLessThan(largestNoisy, 5 * lr)
        XCTAssertLessThan(largestWild, 10 * lr)
    }
}
