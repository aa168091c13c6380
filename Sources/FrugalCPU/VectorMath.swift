// VectorMath: SIMD building blocks of the CPU ops — dot products, sums, maxima and a
// vectorized single-precision exp — over unsafe float pointers.

/// Eight-lane helpers shared by the CPU ops. Each loop keeps two or four independent
/// accumulators so the adds pipeline instead of waiting on one another.
///
/// Written for the baseline x86-64 target the package compiles for (SSE2): products and sums
/// stay separate operations (`addingProduct` and `rounded` would become a libm call per lane
/// there), and rounding to an integer adds and subtracts 1.5·2²³.
enum VectorMath {
    typealias V = SIMD8<Float>

    @inline(__always) static func load(_ p: UnsafePointer<Float>, _ i: Int) -> V {
        UnsafeRawPointer(p + i).loadUnaligned(as: V.self)
    }

    @inline(__always) static func store(_ v: V, _ p: UnsafeMutablePointer<Float>, _ i: Int) {
        UnsafeMutableRawPointer(p + i).storeBytes(of: v, as: V.self)
    }

    /// `Σ a[i]·b[i]` over `n` values.
    @inline(__always) static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var s0 = V(), s1 = V(), s2 = V(), s3 = V()
        var i = 0
        while i + 32 <= n {
            s0 += load(a, i) * load(b, i)
            s1 += load(a, i + 8) * load(b, i + 8)
            s2 += load(a, i + 16) * load(b, i + 16)
            s3 += load(a, i + 24) * load(b, i + 24)
            i += 32
        }
        while i + 8 <= n {
            s0 += load(a, i) * load(b, i)
            i += 8
        }
        var sum = ((s0 + s1) + (s2 + s3)).sum()
        while i < n {
            sum += a[i] * b[i]
            i += 1
        }
        return sum
    }

    /// `Σ a[i]²` over `n` values.
    @inline(__always) static func sumOfSquares(_ a: UnsafePointer<Float>, _ n: Int) -> Float { dot(a, a, n) }

    /// `Σ a[i]` over `n` values.
    @inline(__always) static func sum(_ a: UnsafePointer<Float>, _ n: Int) -> Float {
        var s0 = V(), s1 = V()
        var i = 0
        while i + 16 <= n {
            s0 += load(a, i)
            s1 += load(a, i + 8)
            i += 16
        }
        var total = (s0 + s1).sum()
        while i < n {
            total += a[i]
            i += 1
        }
        return total
    }

    /// The largest of `n` values (−∞ when `n` is 0; NaN-free inputs assumed).
    @inline(__always) static func maximum(_ a: UnsafePointer<Float>, _ n: Int) -> Float {
        var m0 = V(repeating: -.infinity), m1 = m0
        var i = 0
        while i + 16 <= n {
            m0 = larger(m0, load(a, i))
            m1 = larger(m1, load(a, i + 8))
            i += 16
        }
        var m = larger(m0, m1).max()
        while i < n {
            m = max(m, a[i])
            i += 1
        }
        return m
    }

    /// The larger of each pair of lanes (`pointwiseMax` is a call per use, not inlined).
    @inline(__always) static func larger(_ a: V, _ b: V) -> V { a.replacing(with: b, where: b .> a) }

    /// `y[i] = a·x[i] + y[i]` over `n` values.
    @inline(__always) static func axpy(_ a: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        while i + 8 <= n {
            store(load(y, i) + load(x, i) * a, y, i)
            i += 8
        }
        while i < n {
            y[i] += a * x[i]
            i += 1
        }
    }

    // MARK: - exp

    /// `e^x` lane by lane in single precision (Cephes' `expf`: range reduction by ln 2 and a
    /// degree-5 polynomial, within 2 ulp of the exact value); 0 below −87.3 (−∞ included),
    /// +∞ above 88.7.
    @inline(__always) static func exp(_ x: V) -> V {
        let log2e: Float = 1.442_695_04, magic: Float = 12_582_912  // 1.5·2²³: adding it rounds to an integer
        var clamped = x
        clamped.replace(with: -87.336_55, where: x .< -87.336_55)
        clamped.replace(with: 88.376_26, where: x .> 88.376_26)
        let shifted = clamped * log2e + magic
        let n = shifted - magic
        // r = x − n·ln 2, with ln 2 split in two for precision.
        var r = clamped - n * 0.693_359_375
        r = r + n * 2.121_944_4e-4
        var p = V(repeating: 1.987_569_15e-4)
        p = (p * r + 1.398_199_950_7e-3)
        p = (p * r + 8.333_451_907_3e-3)
        p = (p * r + 4.166_579_589_4e-2)
        p = (p * r + 1.666_666_545_9e-1)
        p = (p * r + 5.000_000_120_1e-1)
        let r2 = r * r
        let e = p * r2 + r + 1
        // 2ⁿ from n's bits: shifted holds n + 1.5·2²³, so its low mantissa bits are n.
        let bits = unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- 0x4B40_0000
        let scale = unsafeBitCast((bits &+ 127) &<< 23, to: V.self)
        var result = e * scale
        result.replace(with: 0, where: x .< -87.336_55)
        result.replace(with: .infinity, where: x .> 88.376_26)
        return result
    }

    /// `e^x` of one value, by the same formula as the lanes.
    @inline(__always) static func exp(_ x: Float) -> Float { exp(V(repeating: x))[0] }

    /// `y[i] = e^(x[i] − shift)` over `n` values (x and y may be the same); returns `Σ y[i]`
    /// accumulated in double precision per 256 values.
    @inline(__always) static func expShifted(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int,
                                             shift: Float) -> Double {
        var total: Double = 0
        var i = 0
        let s = V(repeating: shift)
        while i < n {
            let end = min(n, i + 256)
            var acc = V()
            while i + 8 <= end {
                let e = exp(load(x, i) - s)
                store(e, y, i)
                acc += e
                i += 8
            }
            var partial = acc.sum()
            while i < end {
                let e = exp(x[i] - shift)
                y[i] = e
                partial += e
                i += 1
            }
            total += Double(partial)
        }
        return total
    }

    /// `x / (1 + e^−x)` (SiLU) lane by lane.
    @inline(__always) static func silu(_ x: V) -> V { x / (1 + exp(-x)) }

    /// The logistic sigmoid `1 / (1 + e^−x)` lane by lane.
    @inline(__always) static func sigmoid(_ x: V) -> V { 1 / (1 + exp(-x)) }
}
