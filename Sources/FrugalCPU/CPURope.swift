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
            precondition(dx.dtype == .f32, "ropeBackward: a \(dx.dtype) gradient")
            rotate(dx, heads: heads, headDim: headDim, positions: positions, inverseFrequencies: inverseFrequencies,
                   direction: -1)
        }
    }

    /// Rotates each pair `(v[i], v[i + half])` of every head by `direction · position · frequency[i]`.
    ///
    /// cos and sin (in double precision, rounded to f32) are computed once per distinct position
    /// when the positions span no more values than there are tokens (a batch repeats 0..<length).
    /// A 16-bit `x` is rotated a token at a time in an f32 scratch row, then rounded back.
    private func rotate(_ x: Tensor, heads: Int, headDim: Int, positions: [Int32], inverseFrequencies: [Float],
                        direction: Float) {
        let tokens = x.shape.rows * x.shape.last / (heads * headDim)
        precondition(tokens == positions.count, "rope: \(tokens) tokens, \(positions.count) positions")
        Self.checkActivation(x, "rope")
        let half = inverseFrequencies.count, width = heads * headDim, dtype = x.dtype
        let xs = dtype == .f32 ? x.floats.baseAddress : nil, raw = x.rawPointer
        guard tokens > 0, half > 0 else { return }
        let lowest = Int(positions.min()!), span = Int(positions.max()!) - lowest + 1
        let tabulated = span <= tokens
        // (span, 2, half) cos and direction·sin per position, when tabulated
        var table = [Float](repeating: 0, count: tabulated ? span * 2 * half : 0)
        table.withUnsafeMutableBufferPointer { table in
            inverseFrequencies.withUnsafeBufferPointer { frequencies in
                func angles(_ position: Int, _ out: UnsafeMutablePointer<Float>) {
                    for i in 0..<half {
                        let angle = Float(position) * frequencies[i]
                        out[i] = Float(cos(Double(angle)))
                        out[half + i] = direction * Float(sin(Double(angle)))
                    }
                }
                if tabulated {
                    parallelChunks(span, minimumChunk: 64) { range in
                        for p in range { angles(lowest + p, table.baseAddress! + p * 2 * half) }
                    }
                }
                positions.withUnsafeBufferPointer { positions in
                    parallelChunks(tokens, minimumChunk: max(1, 16_384 / (heads * headDim))) { range in
                        withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * half + (xs == nil ? width : 0)) { own in
                            for t in range {
                                let row: UnsafeMutablePointer<Float>
                                if let xs {
                                    row = xs + t * width
                                } else {
                                    row = own.baseAddress! + 2 * half
                                    BlockQuantization.dequantize(dtype, raw + 2 * t * width, row, count: width)
                                }
                                let position = Int(positions[t])
                                let cs: UnsafePointer<Float>
                                if tabulated {
                                    cs = UnsafePointer(table.baseAddress! + (position - lowest) * 2 * half)
                                } else {
                                    angles(position, own.baseAddress!)
                                    cs = UnsafePointer(own.baseAddress!)
                                }
                                for h in 0..<heads {
                                    let v = row + h * headDim
                                    for i in 0..<half {
                                        let a = v[i], b = v[i + half], c = cs[i], s = cs[half + i]
                                        v[i] = a * c - b * s
                                        v[i + half] = b * c + a * s
                                    }
                                }
                                if xs == nil { Self.narrow(row, raw + 2 * t * width, dtype, count: width) }
                            }
                        }
                    }
                }
            }
        }
    }
}
