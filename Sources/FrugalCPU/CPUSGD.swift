// SGD with momentum on the CPU.
import FrugalCore

extension CPUBackend {
    public func sgd(_ parameter: Tensor, gradient: Tensor, momentumBuffer: Tensor, learningRate: Float, momentum: Float,
                    weightDecay: Float) {
        profile.measure("sgd") {
            let p = ParameterValues(parameter), g = gradient.floats.baseAddress!, b = momentumBuffer.floats.baseAddress!
            parallelChunks(parameter.count, minimumChunk: 4096) { range in
                for i in range {
                    let step = g[i] + weightDecay * p[i]
                    b[i] = momentum * b[i] + step
                    p[i] = p[i] - learningRate * b[i]
                }
            }
        }
    }
}
