// CPUAdamW8bit: AdamW with blockwise dynamic 8-bit moments on the CPU — bitsandbytes' 8-bit
// blockwise Adam's storage around `adamW`'s arithmetic.
import FrugalCore

extension CPUBackend {
    /// Per block of 256 values (blocks in parallel, each on its own, so the result does not
    /// depend on the thread count): decode m and v, `AdamWCoefficients.update` each value,
    /// encode the new m and v with the block's new absmax.
    public func adamW8bit(_ parameter: Tensor, gradient: Tensor, m: Tensor, v: Tensor, step: Int, learningRate: Float,
                          beta1: Float, beta2: Float, epsilon: Float, weightDecay: Float) {
        profile.measure("adamW8bit") {
            let n = parameter.count, size = DynamicQuantization.blockSize, blocks = (n + size - 1) / size
            precondition(gradient.count == n && m.dtype == .dynamic8 && v.dtype == .dynamic8Unsigned
                         && m.count == blocks * size && v.count == blocks * size,
                         "adamW8bit: parameter \(parameter.shape), m \(m.shape) \(m.dtype), v \(v.shape) \(v.dtype)")
            let adam = AdamWCoefficients(step: step, learningRate: learningRate, beta1: beta1, beta2: beta2, epsilon: epsilon,
                                         weightDecay: weightDecay)
            let p = ParameterValues(parameter), g = gradient.floats.baseAddress!
            let mBlocks = m.rawPointer, vBlocks = v.rawPointer, stride = DType.dynamic8.blockBytes
            DynamicQuantization.signedMap.withUnsafeBufferPointer { signed in
                DynamicQuantization.unsignedMap.withUnsafeBufferPointer { unsigned in
                    let signed = signed.baseAddress!, unsigned = unsigned.baseAddress!
                    parallelChunks(blocks, minimumChunk: 16) { range in
                        withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * size) { scratch in
                            let ms = scratch.baseAddress!, vs = ms + size
                            for b in range {
                                let start = b * size, count = min(size, n - start)
                                let mBlock = mBlocks + b * stride, vBlock = vBlocks + b * stride
                                DynamicQuantization.dequantizeBlock(mBlock, count: count, into: ms, map: signed)
                                DynamicQuantization.dequantizeBlock(vBlock, count: count, into: vs, map: unsigned)
                                for i in 0..<count {
                                    var value = p[start + i]
                                    adam.update(&value, &ms[i], &vs[i], gradient: g[start + i])
                                    p[start + i] = value
                                }
                                DynamicQuantization.quantizeBlock(ms, count: count, into: mBlock, map: signed)
                                DynamicQuantization.quantizeBlock(vs, count: count, into: vBlock, map: unsigned)
                            }
                        }
                    }
                }
            }
        }
    }
}
