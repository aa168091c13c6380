// CheckResult: the outcome of comparing a candidate (a GPU backend, a model on it) against a
// reference (the CPU backend, Hugging Face transformers) — one line of `frugal gpu-check`.
import Foundation

/// The outcome of one check.
public struct CheckResult: Sendable, Codable, CustomStringConvertible {
    /// What was checked, e.g. "attention backward (GQA, segments)" or "llama3 LoRA gradients vs transformers".
    public var name: String
    public var passed: Bool
    /// The largest difference, relative to the largest reference magnitude.
    public var maxError: Double
    public var tolerance: Double
    /// Why it failed, or what was compared.
    public var detail: String

    public init(name: String, passed: Bool, maxError: Double, tolerance: Double, detail: String) {
        self.name = name; self.passed = passed; self.maxError = maxError; self.tolerance = tolerance; self.detail = detail
    }

    public var description: String {
        String(format: "%@  %@  (max relative error %.2e, tolerance %.0e)%@", passed ? "PASS" : "FAIL", name, maxError, tolerance,
               detail.isEmpty ? "" : " — " + detail)
    }
}

extension CheckResult {
    /// The largest difference between `actual` and `expected`, relative to the largest reference
    /// magnitude (or `floor`, when larger), and where it is (`.infinity` for a NaN or a count mismatch).
    public static func worstDifference(_ expected: [Float], _ actual: [Float], floor: Double = 1e-6) -> (error: Double, index: Int) {
        guard expected.count == actual.count else { return (.infinity, 0) }
        let magnitude = max(largestMagnitude(expected), floor)
        var worst = 0.0, at = 0
        for i in expected.indices {
            let error = Double(abs(expected[i] - actual[i])) / magnitude
            if !(error <= worst) { worst = error.isNaN ? .infinity : error; at = i }  // NaN counts as the worst
        }
        return (worst, at)
    }

    /// The largest absolute value.
    public static func largestMagnitude(_ values: [Float]) -> Double { values.reduce(0) { max($0, Double(abs($1))) } }
}
