// MemoryCategory and MemoryLedger: every allocation is tagged, so peaks are measured by kind.
import Foundation

/// What an allocation holds; peak memory is reported per category.
public enum MemoryCategory: String, Sendable, Codable, CaseIterable {
    /// Frozen model weights.
    case weights
    /// Weights that train (LoRA adapters, or all weights in a full fine-tune), fp32 masters.
    case trainable
    /// Gradients of trainable weights.
    case gradients
    /// Optimizer state (moments).
    case optimizer
    /// Activations saved for backward, and the KV cache.
    case activations
    /// Scratch memory that lives within one op or one step.
    case workspace
}

/// Current and peak bytes, per category and in total.
public struct MemorySnapshot: Sendable, Codable, Equatable {
    public var current: [MemoryCategory: Int] = [:]
    public var peak: [MemoryCategory: Int] = [:]
    /// Peak of the sum over categories (not the sum of per-category peaks).
    public var peakTotal: Int = 0
    public var currentTotal: Int { current.values.reduce(0, +) }

    public init() {}

    private enum CodingKeys: String, CodingKey { case current, peak, peakTotal }

    /// Encodes the per-category figures as objects keyed by category name.
    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(Dictionary(uniqueKeysWithValues: current.map { ($0.key.rawValue, $0.value) }), forKey: .current)
        try container.encode(Dictionary(uniqueKeysWithValues: peak.map { ($0.key.rawValue, $0.value) }), forKey: .peak)
        try container.encode(peakTotal, forKey: .peakTotal)
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        func categories(_ key: CodingKeys) throws -> [MemoryCategory: Int] {
            let raw = try container.decode([String: Int].self, forKey: key)
            return Dictionary(uniqueKeysWithValues: raw.compactMap { k, v in MemoryCategory(rawValue: k).map { ($0, v) } })
        }
        current = try categories(.current)
        peak = try categories(.peak)
        peakTotal = try container.decode(Int.self, forKey: .peakTotal)
    }
}

/// Counts the bytes a backend has allocated, by category; thread-safe.
public final class MemoryLedger: @unchecked Sendable {
    private let lock = NSLock()
    private var state = MemorySnapshot()
    private var budget: Int?
    private var hint: String?

    public init() {}

    /// Frugal's own memory budget in bytes (`--memory-limit`): the backend refuses an allocation
    /// that would take the current total past it, as if the device had run out. nil: only the
    /// device limits.
    public var limit: Int? {
        get { lock.lock(); defer { lock.unlock() }; return budget }
        set { lock.lock(); defer { lock.unlock() }; budget = newValue }
    }

    /// What to try when memory runs out, in `frugal plan`'s words; set by the command that runs.
    public var advice: String? {
        get { lock.lock(); defer { lock.unlock() }; return hint }
        set { lock.lock(); defer { lock.unlock() }; hint = newValue }
    }

    /// Whether `bytes` more stay within `limit`.
    public func fits(_ bytes: Int) -> Bool {
        lock.lock(); defer { lock.unlock() }
        guard let budget else { return true }
        return state.currentTotal + bytes <= budget
    }

    /// Records an allocation of `bytes` in `category`.
    public func allocated(_ bytes: Int, _ category: MemoryCategory) {
        lock.lock(); defer { lock.unlock() }
        let now = state.current[category, default: 0] + bytes
        state.current[category] = now
        state.peak[category] = max(state.peak[category, default: 0], now)
        state.peakTotal = max(state.peakTotal, state.currentTotal)
    }

    /// Records that `bytes` in `category` were freed.
    public func freed(_ bytes: Int, _ category: MemoryCategory) {
        lock.lock(); defer { lock.unlock() }
        state.current[category, default: 0] -= bytes
    }

    /// A copy of the current figures.
    public var snapshot: MemorySnapshot {
        lock.lock(); defer { lock.unlock() }
        return state
    }

    /// Starts a new peak window: peaks are set to the current figures.
    public func resetPeaks() {
        lock.lock(); defer { lock.unlock() }
        state.peak = state.current
        state.peakTotal = state.currentTotal
    }
}
