// CPUActivations: elementwise add, scale, activations and gated activations (SwiGLU, GeGLU),
// with the backwards of the activations, on the CPU. SiLU runs eight lanes at a time in single
// precision; the GELUs evaluate in double precision.
import Foundation
import FrugalCore

extension CPUBackend {
    // MARK: - Add and scale (their backwards are the identity and the same scale)

    public func add(_ out: Tensor, _ a: Tensor, _ b: Tensor) {
        profile.measure("add") {
            precondition(a.count == b.count && out.count == a.count && a.dtype == out.dtype && b.dtype == out.dtype,
                         "add: \(a.shape) \(a.dtype) + \(b.shape) \(b.dtype) -> \(out.shape) \(out.dtype)")
            elementwise(out.count, outputs: [out], inputs: [a, b]) { n, outs, ins in
                let y = outs[0], xa = ins[0], xb = ins[1]
                for i in 0..<n { y[i] = xa[i] + xb[i] }
            }
        }
    }

    public func scale(_ x: Tensor, by s: Float) {
        profile.measure("scale") {
            elementwise(x.count, outputs: [x], inputs: [x]) { n, outs, ins in
                let y = outs[0], xs = ins[0]
                for i in 0..<n { y[i] = xs[i] * s }
            }
        }
    }

    // MARK: - Activation

    public func activate(_ out: Tensor, _ x: Tensor, _ activation: Activation) {
        profile.measure("activate") {
            precondition(out.count == x.count && out.dtype == x.dtype,
                         "activate: \(x.shape) \(x.dtype) -> \(out.shape) \(out.dtype)")
            elementwise(out.count, outputs: [out], inputs: [x]) { n, outs, ins in
                let y = outs[0], xs = ins[0]
                var i = 0
                if activation == .silu {
                    while i + 8 <= n {
                        VectorMath.store(VectorMath.silu(VectorMath.load(xs, i)), y, i)
                        i += 8
                    }
                }
                while i < n {
                    y[i] = Self.apply(activation, xs[i])
                    i += 1
                }
            }
        }
    }

    /// `dx = dy · act'(x)` (=): dy f32, x in the activation dtype, dx f32 (it may alias dy) or
    /// rounded to x's 16-bit dtype.
    public func activateBackward(dx: Tensor, dy: Tensor, x: Tensor, _ activation: Activation) {
        profile.measure("activateBackward") {
            precondition(dx.count == x.count && dy.count == x.count && (dx.dtype == .f32 || dx.dtype == x.dtype) && dy.dtype == .f32,
                         "activateBackward: dx \(dx.shape) \(dx.dtype), dy \(dy.shape) \(dy.dtype), x \(x.shape)")
            elementwise(x.count, outputs: [dx], inputs: [dy, x]) { n, outs, ins in
                let d = outs[0], g = ins[0], xs = ins[1]
                var i = 0
                if activation == .silu {
                    while i + 8 <= n {
                        let v = VectorMath.load(xs, i), s = VectorMath.sigmoid(v)
                        VectorMath.store(VectorMath.load(g, i) * (s * (1 + v * (1 - s))), d, i)
                        i += 8
                    }
                }
                while i < n {
                    d[i] = g[i] * Self.derivative(activation, xs[i])
                    i += 1
                }
            }
        }
    }

    // MARK: - Gated activation

    public func gated(_ out: Tensor, gate: Tensor, up: Tensor, _ activation: Activation) {
        profile.measure("gated") {
            precondition(gate.count == out.count && up.count == out.count && gate.dtype == out.dtype && up.dtype == out.dtype,
                         "gated: gate \(gate.shape) \(gate.dtype), up \(up.shape) \(up.dtype) -> \(out.shape) \(out.dtype)")
            elementwise(out.count, outputs: [out], inputs: [gate, up]) { n, outs, ins in
                let y = outs[0], g = ins[0], u = ins[1]
                var i = 0
                if activation == .silu {
                    while i + 8 <= n {
                        VectorMath.store(VectorMath.silu(VectorMath.load(g, i)) * VectorMath.load(u, i), y, i)
                        i += 8
                    }
                }
                while i < n {
                    y[i] = Self.apply(activation, g[i]) * u[i]
                    i += 1
                }
            }
        }
    }

    /// Gradients of `gated` (=): `dGate = dy·up·act'(gate)`, `dUp = dy·act(gate)`; gate and up
    /// in the activation dtype, dy f32, the outputs f32 or both rounded to gate's 16-bit dtype.
    /// Each element is read before it is written, so f32 outputs may alias the inputs.
    public func gatedBackward(dGate: Tensor, dUp: Tensor, dy: Tensor, gate: Tensor, up: Tensor, _ activation: Activation) {
        profile.measure("gatedBackward") {
            precondition(dGate.count == gate.count && dUp.count == gate.count && dy.count == gate.count && up.count == gate.count
                         && dUp.dtype == dGate.dtype && (dGate.dtype == .f32 || dGate.dtype == gate.dtype) && dy.dtype == .f32
                         && up.dtype == gate.dtype,
                         "gatedBackward: dGate \(dGate.shape), dUp \(dUp.shape), dy \(dy.shape), gate \(gate.shape) \(gate.dtype), up \(up.shape) \(up.dtype)")
            elementwise(gate.count, outputs: [dGate, dUp], inputs: [dy, gate, up]) { n, outs, ins in
                let dg = outs[0], du = outs[1], gy = ins[0], g = ins[1], u = ins[2]
                var i = 0
                if activation == .silu {
                    // σ = sigmoid(gate): silu = gate·σ, silu' = σ·(1 + gate·(1 − σ)).
                    while i + 8 <= n {
                        let dyi = VectorMath.load(gy, i), gi = VectorMath.load(g, i), ui = VectorMath.load(u, i)
                        let s = VectorMath.sigmoid(gi)
                        VectorMath.store(dyi * ui * (s * (1 + gi * (1 - s))), dg, i)
                        VectorMath.store(dyi * (gi * s), du, i)
                        i += 8
                    }
                }
                while i < n {
                    let dyi = gy[i], gi = g[i], ui = u[i]
                    dg[i] = dyi * ui * Self.derivative(activation, gi)
                    du[i] = dyi * Self.apply(activation, gi)
                    i += 1
                }
            }
        }
    }

    // MARK: - The scalar functions

    /// The scalar activation functions, as PyTorch defines them.
    @inline(__always) static func apply(_ activation: Activation, _ x: Float) -> Float {
        switch activation {
        case .silu: return x / (1 + VectorMath.exp(-x))
        case .relu: return max(x, 0)
        case .geluTanh:
            let inner = 0.7978845608028654 * (Double(x) + 0.044715 * Double(x) * Double(x) * Double(x))
            return Float(0.5 * Double(x) * (1 + tanh(inner)))
        case .gelu: return Float(0.5 * Double(x) * (1 + erf(Double(x) / 2.0.squareRoot())))
        }
    }

    /// The derivatives of `apply`, as PyTorch's backward kernels compute them:
    /// - silu: `σ(x)·(1 + x·(1 − σ(x)))`;
    /// - relu: 1 where x > 0, else 0;
    /// - gelu: `Φ(x) + x·φ(x)`;
    /// - geluTanh: with `u = √(2/π)·(x + 0.044715·x³)`,
    ///   `½(1 + tanh u) + ½x·(1 − tanh² u)·√(2/π)·(1 + 3·0.044715·x²)`.
    @inline(__always) static func derivative(_ activation: Activation, _ x: Float) -> Float {
        switch activation {
        case .silu:
            let sigmoid = 1 / (1 + VectorMath.exp(-x))
            return sigmoid * (1 + x * (1 - sigmoid))
        case .relu: return x > 0 ? 1 : 0
        case .geluTanh:
            let x = Double(x), beta = 0.7978845608028654, kappa = 0.044715
            let t = tanh(beta * (x + kappa * x * x * x))
            return Float(0.5 * (1 + t) + 0.5 * x * (1 - t * t) * beta * (1 + 3 * kappa * x * x))
        case .gelu:
            let x = Double(x)
            let cdf = 0.5 * (1 + erf(x / 2.0.squareRoot()))
            let pdf = exp(-0.5 * x * x) / (2 * Double.pi).squareRoot()
            return Float(cdf + x * pdf)
        }
    }
}
