// CUDAActivations: elementwise add, multiply, scale, activations and gated activations (SwiGLU,
// GeGLU) with their backwards, on the GPU (Kernels/activations.cu, Kernels/elementwise.cu).
import Foundation
import FrugalCore

extension CUDABackend {
    /// The kernels' activation codes.
    static func code(_ activation: Activation) -> Int32 {
        switch activation {
        case .silu: 0
        case .relu: 1
        case .geluTanh: 2
        case .gelu: 3
        }
    }

    // MARK: - Add, multiply, scale

    public func add(_ out: Tensor, _ a: Tensor, _ b: Tensor) {
        precondition(a.count == b.count && out.count == a.count && a.dtype == b.dtype && out.dtype == a.dtype,
                     "add: \(a.shape) + \(b.shape) -> \(out.shape)")
        must("add") { try launch(CUDAKernels.add(a.dtype), elements: a.count, [out.address, a.address, b.address, Int64(a.count)]) }
    }

    public func multiply(_ out: Tensor, _ a: Tensor, _ b: Tensor) {
        precondition(a.count == b.count && out.count == a.count && a.dtype == b.dtype && out.dtype == a.dtype,
                     "multiply: \(a.shape) · \(b.shape) -> \(out.shape)")
        must("multiply") {
            try launch(CUDAKernels.multiply(a.dtype), elements: a.count, [out.address, a.address, b.address, Int64(a.count)])
        }
    }

    public func scale(_ x: Tensor, by s: Float) {
        must("scale") { try launch(CUDAKernels.scale(x.dtype), elements: x.count, [x.address, s, Int64(x.count)]) }
    }

    // MARK: - Activation

    public func activate(_ out: Tensor, _ x: Tensor, _ activation: Activation) {
        precondition(out.count == x.count && out.dtype == x.dtype, "activate: \(x.shape) -> \(out.shape)")
        must("activate \(activation)") {
            try launch(CUDAKernels.activationForward(x.dtype), elements: x.count,
                       [out.address, x.address, Int64(x.count), Self.code(activation)])
        }
    }

    /// `dx = dy · act'(x)` (=): dx in f32 (may alias dy) or in x's 16-bit dtype.
    public func activateBackward(dx: Tensor, dy: Tensor, x: Tensor, _ activation: Activation) {
        precondition(dx.count == x.count && dy.count == x.count && (dx.dtype == .f32 || dx.dtype == x.dtype) && dy.dtype == .f32,
                     "activateBackward: dx \(dx.shape) \(dx.dtype), dy \(dy.shape), x \(x.shape) \(x.dtype)")
        must("activateBackward \(activation)") {
            try launch(CUDAKernels.activationBackward(x.dtype, rounded: dx.dtype != .f32), elements: x.count,
                       [dx.address, dy.address, x.address, Int64(x.count), Self.code(activation)])
        }
    }

    // MARK: - Gated activation

    public func gated(_ out: Tensor, gate: Tensor, up: Tensor, _ activation: Activation) {
        precondition(out.count == gate.count && up.count == gate.count && up.dtype == gate.dtype && out.dtype == gate.dtype,
                     "gated: gate \(gate.shape), up \(up.shape) -> \(out.shape)")
        must("gated \(activation)") {
            try launch(CUDAKernels.gatedForward(gate.dtype), elements: gate.count,
                       [out.address, gate.address, up.address, Int64(gate.count), Self.code(activation)])
        }
    }

    /// Gradients of `gated` (=): `dGate = dy·up·act'(gate)`, `dUp = dy·act(gate)`, both in f32 or
    /// both in the activations' 16-bit dtype.
    public func gatedBackward(dGate: Tensor, dUp: Tensor, dy: Tensor, gate: Tensor, up: Tensor, _ activation: Activation) {
        precondition(dGate.count == gate.count && dUp.count == gate.count && dy.count == gate.count && up.count == gate.count
                     && up.dtype == gate.dtype && dUp.dtype == dGate.dtype && (dGate.dtype == .f32 || dGate.dtype == gate.dtype)
                     && dy.dtype == .f32,
                     "gatedBackward: dGate \(dGate.shape) \(dGate.dtype), dUp \(dUp.shape) \(dUp.dtype), dy \(dy.shape), gate \(gate.shape) \(gate.dtype), up \(up.shape)")
        must("gatedBackward \(activation)") {
            try launch(CUDAKernels.gatedBackward(gate.dtype, rounded: dGate.dtype != .f32), elements: gate.count,
                       [dGate.address, dUp.address, dy.address, gate.address, up.address, Int64(gate.count), Self.code(activation)])
        }
    }
}
