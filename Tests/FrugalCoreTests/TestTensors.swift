// Test helper: CPU tensors filled from Swift arrays, in any float dtype.
import XCTest
import FrugalCore
import FrugalCPU

extension CPUBackend {
    /// A workspace tensor holding `values` stored as `dtype` (f32, f16, bf16, or quantized by
    /// `BlockQuantization.quantize`).
    func tensor(_ values: [Float], _ shape: Shape, _ dtype: DType = .f32) -> Tensor {
        let t = zeros(shape, dtype, .workspace)
        switch dtype {
        case .f32: _ = t.floats.update(from: values)
        case .f16, .bf16:
            let p = t.rawPointer.assumingMemoryBound(to: UInt16.self)
            for (i, v) in values.enumerated() {
                p[i] = dtype == .f16 ? HalfPrecision.floatToF16(v) : HalfPrecision.floatToBF16(v)
            }
        default: BlockQuantization.quantize(dtype, values, t.rawPointer, count: values.count)
        }
        return t
    }
}
