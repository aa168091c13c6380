// CPUActivations: elementwise add, scale, activations and gated activations (SwiGLU, GeGLU),
// with the backwards of the activations, on the CPU. SiLU runs eight lanes at a time in single
// precision; the GELUs evaluate in double precision.
import Foundation
import FrugalCore

extension CPUBackend {
    // MARK: - Add and scale (their backwards are the identity and the same scale)

    public func add(_ out: Tensor, _ a: Tensor, _ b: Tensor) {
        profile.measure("add") {
            precondition(a.count == b.count && out.count == a.count, "add: \(a.shape) + \(b.shape) -> \(out.shape)")
            let y = out.floats.baseAddress!, xa = a.floats.baseAddress!, xb = b.floats.baseAddress!
            parallelChunks(out.count, minimumChunk: 4096) { range in
                for i in range { y[i] = xa[i] + xb[i] }
            }
        }
    }

    public func scale(_ x: Tensor, by s: Float) {
        profile.measure("scale") {
            let xs = x.floats.baseAddress!
            parallelChunks(x.count, minimumChunk: 4096) { range in
                for i in range { xs[i] *= s }
            }
        }
    }

    // MARK: - Activation

    public func activate(_ out: Tensor, _ x: Tensor, _ activation: Activation) {
        profile.measure("activate") {
            let y = out.floats.baseAddress!, xs = x.floats.baseAddress!
            parallelChunks(out.count, minimumChunk: 4096) { range in
                var i = range.lowerBound
                if activation == .silu {
                    while i + 8 <= range.upperBound {
                        VectorMath.store(VectorMath.silu(VectorMath.load(xs, i)), y, i)
                        i += 8
                    }
                }
                while i < range.upperBound {
                    y[i] = Self.apply(activation, xs[i])
                    i += 1
                }
            }
        }
    }

    /// `dx = dy · act'(x)` (=; dx may alias dy).
    public func activateBackward(dx: Tensor, dy: Tensor, x: Tensor, _ activation: Activation) {
        profile.measure("activateBackward") {
            precondition(dx.count == x.count && dy.count == x.count, "activateBackward: dx \(dx.shape), dy \(dy.shape), x \(x.shape)")
            let d = dx.floats.baseAddress!, g = dy.floats.baseAddress!, xs = x.floats.baseAddress!
            parallelChunks(x.count, minimumChunk: 4096) { range in
                var i = range.lowerBound
                if activation == .silu {
                    while i + 8 <= range.upperBound {
                        let v = VectorMath.load(xs, i), s = VectorMath.sigmoid(v)
                        VectorMath.store(VectorMath.load(g, i) * (s * (1 + v * (1 - s))), d, i)
                        i += 8
                    }
                }
                while i < range.upperBound {
                    d[i] = g[i] * Self.derivative(activation, xs[i])
                    i += 1
                }
            }
        }
    }

    // MARK: - Gated activation

    public func gated(_ out: Tensor, gate: Tensor, up: Tensor, _ activation: Activation) {
        profile.measure("gated") {
            let y = out.floats.baseAddress!, g = gate.floats.baseAddress!, u = up.floats.baseAddress!
            parallelChunks(out.count, minimumChunk: 4096) { range in
                var i = range.lowerBound
                if activation == .silu {
                    while i + 8 <= range.upperBound {
                        VectorMath.store(VectorMath.silu(VectorMath.load(g, i)) * VectorMath.load(u, i), y, i)
                        i += 8
                    }
                }
                while i < range.upperBound {
                    y[i] = Self.apply(activation, g[i]) * u[i]
                    i += 1
                }
            }
        }
    }

    /// Gradients of `gated` (=): `dGate = dy·up·act'(gate)`, `dUp = dy·act(gate)`.
    /// Each element is read before it is written, so the outputs may alias the inputs.
    public func gatedBackward(dGate: Tensor, dUp: Tensor, dy: Tensor, gate: Tensor, up: Tensor, _ activation: Activation) {
        profile.measure("gatedBackward") {
            precondition(dGate.count == gate.count && dUp.count == gate.count && dy.count == gate.count && up.count == gate.count,
                         "gatedBackward: dGate \(dGate.shape), dUp \(dUp.shape), dy \(dy.shape), gate \(gate.shape), up \(up.shape)")
            let dg = dGate.floats.baseAddress!, du = dUp.floats.baseAddress!, gy = dy.floats.baseAddress!
            let g = gate.floats.baseAddress!, u = up.floats.baseAddress!
            parallelChunks(gate.count, minimumChunk: 4096) { range in
                var i = range.lowerBound
                if activation == .silu {
                    // σ = sigmoid(gate): silu = gate·σ, silu' = σ·(1 + gate·(1 − σ)).
                    while i + 8 <= range.upperBound {
                        let dyi = VectorMath.load(gy, i), gi = VectorMath.load(g, i), ui = VectorMath.load(u, i)
                        let s = VectorMath.sigmoid(gi)
                        VectorMath.store(dyi * ui * (s * (1 + gi * (1 - s))), dg, i)
                        VectorMath.store(dyi * (gi * s), du, i)
                        i += 8
                    }
                }
                while i < range.upperBound {
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
