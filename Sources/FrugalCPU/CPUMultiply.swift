// Elementwise product on the CPU (dropout masks, gradient gating).
import FrugalCore

extension CPUBackend {
    public func multiply(_ out: Tensor, _ a: Tensor, _ b: Tensor) {
        profile.measure("multiply") {
            precondition(a.count == b.count && out.count == a.count && a.dtype == out.dtype && b.dtype == out.dtype,
                         "multiply: \(a.shape) \(a.dtype) · \(b.shape) \(b.dtype) -> \(out.shape) \(out.dtype)")
            elementwise(out.count, outputs: [out], inputs: [a, b]) { n, outs, ins in
                let y = outs[0], xa = ins[0], xb = ins[1]
                for i in 0..<n { y[i] = xa[i] * xb[i] }
            }
        }
    }
}
