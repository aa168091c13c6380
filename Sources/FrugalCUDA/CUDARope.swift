// CUDARope: rotary position embedding in place, and its backward (the inverse rotation), on the
// GPU (Kernels/rope.cu).
import Foundation
import FrugalCore

extension CUDABackend {
    // MARK: - RoPE

    public func rope(_ x: Tensor, heads: Int, headDim: Int, positions: [Int32], inverseFrequencies: [Float]) {
        rotate(x, heads: heads, headDim: headDim, positions: positions, inverseFrequencies: inverseFrequencies, direction: 1)
    }

    /// Gradient of `rope` in place on `dx`: the rotation by the opposite angle.
    public func ropeBackward(_ dx: Tensor, heads: Int, headDim: Int, positions: [Int32], inverseFrequencies: [Float]) {
        rotate(dx, heads: heads, headDim: headDim, positions: positions, inverseFrequencies: inverseFrequencies, direction: -1)
    }

    private func rotate(_ x: Tensor, heads: Int, headDim: Int, positions: [Int32], inverseFrequencies: [Float], direction: Float) {
        let tokens = x.count / (heads * headDim), half = inverseFrequencies.count
        precondition(tokens == positions.count && 2 * half <= headDim, "rope: \(tokens) tokens, \(positions.count) positions")
        guard tokens > 0, half > 0 else { return }
        must("rope of \(x.shape)") {
            let p = try stage(positions), f = try stage(inverseFrequencies)
            try launch(CUDAKernels.rope(x.dtype), rows: tokens,
                       [x.address, p.address, f.address, i32(tokens), i32(heads), i32(headDim), i32(half), direction])
        }
    }
}
