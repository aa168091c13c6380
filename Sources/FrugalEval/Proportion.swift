// Proportion: a rate out of n trials with its Wilson score interval, for accuracies and the like.
import Foundation

/// A count out of a number of trials, with a 95% Wilson score interval.
///
/// The Wilson interval (Wilson, 1927) inverts the normal test of a proportion: for `p̂ = k/n`
/// and `z = 1.96`, its bounds are
/// `(p̂ + z²/2n ± z·√(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)`.
/// Unlike the plain `p̂ ± z·√(p̂(1−p̂)/n)` it stays inside [0, 1] and keeps its coverage near 0
/// and 1 and for small n, which is where evaluation rates of a few hundred items often lie.
public struct Proportion: Sendable, Codable, Equatable {
    /// Trials counted as successes.
    public let count: Int
    /// Trials.
    public let total: Int
    /// `count / total` (0 with no trials).
    public let rate: Double
    /// Lower bound of the interval.
    public let lower: Double
    /// Upper bound of the interval.
    public let upper: Double

    /// The normal quantile of a two-sided 95% interval.
    public static let z95 = 1.959963984540054

    /// A proportion and its Wilson interval at the confidence `z` stands for (95% by default).
    /// With no trials the rate is 0 and the interval all of [0, 1].
    public init(count: Int, total: Int, z: Double = Proportion.z95) {
        precondition(count >= 0 && count <= total, "\(count) successes out of \(total) trials")
        self.count = count
        self.total = total
        guard total > 0 else {
            rate = 0; lower = 0; upper = 1
            return
        }
        let n = Double(total), p = Double(count) / n, z2 = z * z
        let center = (p + z2 / (2 * n)) / (1 + z2 / n)
        let half = z / (1 + z2 / n) * (p * (1 - p) / n + z2 / (4 * n * n)).squareRoot()
        rate = p
        lower = max(0, center - half)
        upper = min(1, center + half)
    }

    /// "31.0% [25.5, 37.1]": the rate and its interval in percent.
    public var percentWithInterval: String {
        String(format: "%.1f%% [%.1f, %.1f]", 100 * rate, 100 * lower, 100 * upper)
    }
}
