// CPUOptimizer: the AdamW step (its 8-bit form in CPUAdamW8bit.swift), gradient reductions (norm, finiteness), emulated 16-bit rounding
// and zero-filling on the CPU.
import Foundation
import FrugalCore

extension CPUBackend {
    /// Elements per block of the reductions: each block's partial result is kept, then the
    /// blocks are combined in order, so the result does not depend on the thread count.
    static let reductionBlock = 1 << 16

    // MARK: - AdamW

    /// One AdamW step (`AdamWCoefficients`: `torch.optim.AdamW`'s order).
    public func adamW(_ parameter: Tensor, gradient: Tensor, m: Tensor, v: Tensor, step: Int, learningRate: Float,
                      beta1: Float, beta2: Float, epsilon: Float, weightDecay: Float) {
        profile.measure("adamW") {
            precondition(step >= 1 && gradient.count == parameter.count && m.count == parameter.count
                         && v.count == parameter.count, "adamW: step \(step), parameter \(parameter.shape)")
            let g = gradient.floats.baseAddress!
            let ms = m.floats.baseAddress!, vs = v.floats.baseAddress!
            let adam = AdamWCoefficients(step: step, learningRate: learningRate, beta1: beta1, beta2: beta2, epsilon: epsilon,
                                         weightDecay: weightDecay)
            let values = ParameterValues(parameter)
            parallelChunks(parameter.count, minimumChunk: 4096) { range in
                for i in range {
                    var p = values[i]
                    adam.update(&p, &ms[i], &vs[i], gradient: g[i])
                    values[i] = p
                }
            }
        }
    }

    // MARK: - Reductions

    /// `Σ x²` in double precision, per block then over blocks in order.
    public func sumOfSquares(_ x: Tensor) -> Double {
        return profile.measure("sumOfSquares") {
            let xs = x.floats.baseAddress!
            return blockReduction(x.count) { range in
                var sum: Double = 0
                for i in range { sum += Double(xs[i]) * Double(xs[i]) }
                return sum
            }.reduce(0, +)
        }
    }

    /// Whether every value is finite (no NaN, no ±∞).
    public func allFinite(_ x: Tensor) -> Bool {
        return profile.measure("allFinite") {
            let xs = x.floats.baseAddress!
            return blockReduction(x.count) { range in
                for i in range where !xs[i].isFinite { return 0 }
                return 1
            }.allSatisfy { $0 == 1 }
        }
    }

    /// `body` over each block of `reductionBlock` elements of `0..<count`, in parallel.
    /// - Returns: one result per block, in order.
    private func blockReduction(_ count: Int, _ body: (Range<Int>) -> Double) -> [Double] {
        let blocks = (count + Self.reductionBlock - 1) / Self.reductionBlock
        var results = [Double](repeating: 0, count: blocks)
        results.withUnsafeMutableBufferPointer { results in
            parallelChunks(blocks) { range in
                for b in range {
                    results[b] = body(b * Self.reductionBlock..<min(count, (b + 1) * Self.reductionBlock))
                }
            }
        }
        return results
    }

    // MARK: - Precision and filling

    /// Rounds every f32 value in place to the nearest value of `dtype` (`HalfPrecision.round`).
    public func roundInPlace(_ x: Tensor, to dtype: DType) {
        profile.measure("roundInPlace") {
            precondition(dtype == .f32 || dtype == .f16 || dtype == .bf16, "roundInPlace to \(dtype)")
            if dtype == .f32 { return }
            let xs = x.floats.baseAddress!
            parallelChunks(x.count, minimumChunk: 4096) { range in
                for i in range { xs[i] = HalfPrecision.round(xs[i], to: dtype) }
            }
        }
    }

    /// Fills an f32 tensor with zeros.
    public func zero(_ x: Tensor) {
        profile.measure("zero") {
            precondition(x.dtype == .f32, "zero of a \(x.dtype) tensor")
            memset(x.rawPointer, 0, x.byteCount)
        }
    }
}

/// A parameter's values read as f32 and written back in its dtype: f32 in place, f16 or bf16
/// widened on read and rounded to nearest even on write (an optimizer's update of a 16-bit weight).
struct ParameterValues: @unchecked Sendable {
    private let floats: UnsafeMutablePointer<Float>?
    private let halves: UnsafeMutablePointer<UInt16>
    private let dtype: DType

    init(_ parameter: Tensor) {
        precondition([.f32, .f16, .bf16].contains(parameter.dtype), "optimizer parameter of dtype \(parameter.dtype)")
        dtype = parameter.dtype
        floats = dtype == .f32 ? parameter.floats.baseAddress! : nil
        halves = parameter.rawPointer.assumingMemoryBound(to: UInt16.self)
    }

    subscript(i: Int) -> Float {
        @inline(__always) get {
            if let floats { return floats[i] }
            return dtype == .bf16 ? HalfPrecision.bf16ToFloat(halves[i]) : HalfPrecision.f16ToFloat(halves[i])
        }
        @inline(__always) nonmutating set {
            if let floats { floats[i] = newValue; return }
            halves[i] = dtype == .bf16 ? HalfPrecision.floatToBF16(newValue) : HalfPrecision.floatToF16(newValue)
        }
    }
}
