// Test helper: CPU tensors filled from Swift arrays, in any float dtype.
import XCTest
import FrugalCore
import FrugalCPU

extension CPUBackend {
    /// A workspace tensor holding `values` stored as `dtype` (f32, f16 or bf16).
    func tensor(_ values: [Float], _ shape: Shape, _ dtype: DType = .f32) -> Tensor {
        let t = zeros(shape, dtype, .workspace)
        switch dtype {
        case .f32: _ = t.floats.update(from: values)
        case .f16, .bf16:
            let p = t.rawPointer.assumingMemoryBound(to: UInt16.self)
            for (i, v) in values.enumerated() {
                p[i] = dtype == .f16 ? HalfPrecision.floatToF16(v) : HalfPrecision.floatToBF16(v)
            }
        default: XCTFail("tensor(_:_:_:) takes float dtypes, not \(dtype)")
        }
        return t
    }
}
