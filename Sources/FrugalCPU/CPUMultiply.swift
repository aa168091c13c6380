// Elementwise product on the CPU (dropout masks, gradient gating).
import FrugalCore

extension CPUBackend {
    public func multiply(_ out: Tensor, _ a: Tensor, _ b: Tensor) {
        profile.measure("multiply") {
            precondition(a.count == b.count && out.count == a.count, "multiply: \(a.shape) · \(b.shape) -> \(out.shape)")
            let y = out.floats.baseAddress!, xa = a.floats.baseAddress!, xb = b.floats.baseAddress!
            parallelChunks(out.count, minimumChunk: 4096) { range in
                for i in range { y[i] = xa[i] * xb[i] }
            }
        }
    }
}
