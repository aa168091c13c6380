// CPURope: rotary position embedding in place, and its backward (the inverse rotation), on the CPU.
import Foundation
import FrugalCore

extension CPUBackend {
    // MARK: - RoPE

    public func rope(_ x: Tensor, heads: Int, headDim: Int, positions: [Int32], inverseFrequencies: [Float]) {
        profile.measure("rope") {
            rotate(x, heads: heads, headDim: headDim, positions: positions, inverseFrequencies: inverseFrequencies,
                   direction: 1)
        }
    }

    /// Gradient of `rope` in place on `dx`: the rotation is orthogonal, so its transpose, the
    /// rotation by the opposite angle, carries the gradient back.
    public func ropeBackward(_ dx: Tensor, heads: Int, headDim: Int, positions: [Int32], inverseFrequencies: [Float]) {
        profile.measure("ropeBackward") {
            rotate(dx, heads: heads, headDim: headDim, positions: positions, inverseFrequencies: inverseFrequencies,
                   direction: -1)
        }
    }

    /// Rotates each pair `(v[i], v[i + half])` of every head by `direction · position · frequency[i]`.
    private func rotate(_ x: Tensor, heads: Int, headDim: Int, positions: [Int32], inverseFrequencies: [Float],
                        direction: Float) {
        let tokens = x.shape.rows * x.shape.last / (heads * headDim)
        precondition(tokens == positions.count, "rope: \(tokens) tokens, \(positions.count) positions")
        let half = inverseFrequencies.count, xs = x.floats.baseAddress!
        positions.withUnsafeBufferPointer { positions in
            inverseFrequencies.withUnsafeBufferPointer { frequencies in
                parallelChunks(tokens, minimumChunk: 4) { range in
                    for t in range {
                        let p = Float(positions[t])
                        for i in 0..<half {
                            let angle = p * frequencies[i]
                            let c = Float(cos(Double(angle))), s = direction * Float(sin(Double(angle)))
                            for h in 0..<heads {
                                let v = xs + (t * heads + h) * headDim
                                let a = v[i], b = v[i + half]
                                v[i] = a * c - b * s
                                v[i + half] = b * c + a * s
                            }
                        }
                    }
                }
            }
        }
    }
}
