// DataSplit: deterministic train/test splits by seed and fraction — of items, or of groups of
// items (so that a question never lands on both sides) — and seeded samples of a split.
import FrugalModels

/// Which part of a data set to use.
public enum DataSplit: String, Sendable, Codable, CaseIterable {
    /// Everything but the held-out part.
    case train
    /// The held-out part.
    case test
    /// Everything.
    case all
}

/// Assigns items to the train or test side, as a function of the seed and the fraction alone.
///
/// Units (items, or distinct group keys) are put in a canonical order, shuffled by a
/// Fisher–Yates shuffle driven by `SplitMix64(seed)`, and the first `round(fraction · units)`
/// go to the test side — at least one and at most all but one when there are two or more units.
/// The same file, seed and fraction give the same split on every machine and Swift version.
public struct SplitPlan: Sendable, Codable, Equatable {
    /// Fraction of units held out for testing, in (0, 1).
    public var testFraction: Double
    /// Seed of the shuffle.
    public var seed: UInt64

    /// A plan.
    public init(testFraction: Double = 0.2, seed: UInt64 = 0) {
        precondition(testFraction > 0 && testFraction < 1, "test fraction \(testFraction) is not in (0, 1)")
        self.testFraction = testFraction
        self.seed = seed
    }

    /// Whether each of `count` items is held out (true) or kept for training.
    public func isTest(count: Int) -> [Bool] {
        var held = [Bool](repeating: false, count: count)
        for index in shuffled(Array(0..<count)).prefix(testUnits(count)) { held[index] = true }
        return held
    }

    /// Whether each item is held out, splitting by group: items with the same key are always on
    /// the same side. Keys are ordered by their text before the shuffle, so the split does not
    /// depend on the order of the items.
    public func isTest(groups keys: [String]) -> [Bool] {
        let distinct = Array(Set(keys)).sorted()
        let held = Set(shuffled(distinct).prefix(testUnits(distinct.count)))
        return keys.map { held.contains($0) }
    }

    /// The indices of `split` given the held-out flags, in their original order.
    public static func indices(of split: DataSplit, isTest: [Bool]) -> [Int] {
        switch split {
        case .all: Array(isTest.indices)
        case .test: isTest.indices.filter { isTest[$0] }
        case .train: isTest.indices.filter { !isTest[$0] }
        }
    }

    /// At most `limit` of `indices`, drawn at random by the seed (so a limit samples the whole
    /// split, not its first records), in their original order.
    public func sample(_ indices: [Int], limit: Int?) -> [Int] {
        guard let limit, limit < indices.count else { return indices }
        return shuffled(indices, salt: 0x5A4D_504C).prefix(max(limit, 0)).sorted()
    }

    private func testUnits(_ units: Int) -> Int {
        guard units > 1 else { return units == 1 ? 1 : 0 }
        return min(max(Int((testFraction * Double(units)).rounded()), 1), units - 1)
    }

    private func shuffled<T>(_ values: [T], salt: UInt64 = 0) -> [T] {
        var values = values
        var random = SplitMix64(seed: seed ^ salt)
        for high in values.indices.dropFirst().reversed() {
            let other = Int(UInt64(high + 1).multipliedFullWidth(by: random.next()).high)
            values.swapAt(high, other)
        }
        return values
    }
}
