// CPUActivationStorage: forward activations stored in f16 or bf16 on the CPU. The ops compute
// in f32: a 16-bit input is widened (exactly), and an f32 result is rounded once, to nearest
// even, into a 16-bit output. f32 tensors are used in place, so the f32 path pays nothing.
import FrugalCore

extension CPUBackend {
    /// Values an elementwise op widens at once per input and output, on the stack, for 16-bit tensors.
    static let elementwiseBlock = 1024

    /// Checks that `tensor` may hold a forward activation: f32, f16 or bf16.
    static func checkActivation(_ tensor: Tensor, _ op: String) {
        precondition(tensor.dtype == .f32 || tensor.dtype == .f16 || tensor.dtype == .bf16,
                     "\(op): a \(tensor.dtype) activation (f32, f16 or bf16)")
    }

    /// Rounds `count` floats to nearest even into the f16 or bf16 values at `destination`.
    static func narrow(_ source: UnsafePointer<Float>, _ destination: UnsafeMutableRawPointer, _ dtype: DType,
                       count: Int) {
        let d = destination.assumingMemoryBound(to: UInt16.self)
        switch dtype {
        case .f16: for i in 0..<count { d[i] = HalfPrecision.floatToF16(source[i]) }
        case .bf16: for i in 0..<count { d[i] = HalfPrecision.floatToBF16(source[i]) }
        default: preconditionFailure("narrow into \(dtype)")
        }
    }

    /// Rounds the f32 tensor `wide` into the 16-bit `out` from element `offset` on, in parallel.
    func narrow(_ wide: Tensor, into out: Tensor, at offset: Int = 0) {
        precondition(wide.dtype == .f32 && offset + wide.count <= out.count, "narrow: \(wide.shape) into \(out.shape)")
        let source = UnsafePointer(wide.floats.baseAddress!), destination = out.rawPointer + 2 * offset
        let dtype = out.dtype
        parallelChunks(wide.count, minimumChunk: 4096) { range in
            Self.narrow(source + range.lowerBound, destination + 2 * range.lowerBound, dtype, count: range.count)
        }
    }

    /// `tensor` itself when f32, else its values widened into a new f32 workspace tensor (a 16-bit
    /// activation that an op reads whole: through BLAS, or across rows).
    func widened(_ tensor: Tensor) -> Tensor {
        if tensor.dtype == .f32 { return tensor }
        Self.checkActivation(tensor, "widen")
        let wide = empty(tensor.shape, .f32, .workspace)
        let source = UnsafeRawPointer(tensor.rawPointer), destination = wide.floats.baseAddress!, dtype = tensor.dtype
        parallelChunks(tensor.count, minimumChunk: 4096) { range in
            BlockQuantization.dequantize(dtype, source + 2 * range.lowerBound, destination + range.lowerBound,
                                         count: range.count)
        }
        return wide
    }

    /// Calls `body` with an f32 tensor standing for the output `out`: `out` itself when f32, else
    /// a workspace tensor (holding `out`'s values when `reading`, for an accumulate) that is
    /// rounded into `out` when `body` returns.
    func withFloatOutput(_ out: Tensor, reading: Bool, _ body: (Tensor) -> Void) {
        if out.dtype == .f32 { return body(out) }
        Self.checkActivation(out, "output")
        let wide = reading ? widened(out) : empty(out.shape, .f32, .workspace)
        body(wide)
        narrow(wide, into: out)
    }

    /// Runs the f32 kernel of an elementwise op over `count` values in parallel chunks:
    /// `kernel(n, outputs, inputs)` computes `n` values, each pointer at the first of them.
    /// f32 tensors are read and written in place; a 16-bit input is widened a block at a time
    /// into stack scratch, and a 16-bit output is computed there and rounded into place. A block
    /// is read whole before it is written, so outputs may alias inputs as the kernel allows.
    func elementwise(_ count: Int, outputs: [Tensor], inputs: [Tensor],
                     _ kernel: (Int, [UnsafeMutablePointer<Float>], [UnsafePointer<Float>]) -> Void) {
        let tensors = outputs + inputs
        precondition(tensors.allSatisfy { $0.count == count }, "elementwise: \(tensors.map(\.shape)) for \(count) values")
        if tensors.allSatisfy({ $0.dtype == .f32 }) {
            let outs = outputs.map { $0.floats.baseAddress! }, ins = inputs.map { UnsafePointer($0.floats.baseAddress!) }
            parallelChunks(count, minimumChunk: 4096) { range in
                kernel(range.count, outs.map { $0 + range.lowerBound }, ins.map { $0 + range.lowerBound })
            }
            return
        }
        for t in tensors { Self.checkActivation(t, "elementwise") }
        let block = Self.elementwiseBlock
        parallelChunks(count, minimumChunk: 4096) { range in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: (inputs.count + outputs.count) * block) { scratch in
                let base = scratch.baseAddress!
                var ins = [UnsafePointer<Float>](repeating: UnsafePointer(base), count: inputs.count)
                var outs = [UnsafeMutablePointer<Float>](repeating: base, count: outputs.count)
                for start in stride(from: range.lowerBound, to: range.upperBound, by: block) {
                    let n = min(block, range.upperBound - start)
                    for (k, t) in inputs.enumerated() {
                        if t.dtype == .f32 {
                            ins[k] = UnsafePointer(t.floats.baseAddress! + start)
                        } else {
                            BlockQuantization.dequantize(t.dtype, t.rawPointer + 2 * start, base + k * block, count: n)
                            ins[k] = UnsafePointer(base + k * block)
                        }
                    }
                    for (k, t) in outputs.enumerated() {
                        outs[k] = t.dtype == .f32 ? t.floats.baseAddress! + start : base + (inputs.count + k) * block
                    }
                    kernel(n, outs, ins)
                    for (k, t) in outputs.enumerated() where t.dtype != .f32 {
                        Self.narrow(outs[k], t.rawPointer + 2 * start, t.dtype, count: n)
                    }
                }
            }
        }
    }
}
