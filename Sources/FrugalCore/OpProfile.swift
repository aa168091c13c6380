// OpProfile: wall time per backend op, when enabled — where a training step or a token goes.
import Foundation

/// Calls and wall seconds per op of a backend, recorded while `enabled` (a GPU backend waits for
/// each op to finish, so its figures are device time plus launch overhead).
///
/// Only outermost ops count (the GEMMs inside `crossEntropy` are part of `crossEntropy`), so
/// the entries add up to the time spent inside the backend.
public final class OpProfile: @unchecked Sendable {
    /// The figures of one op.
    public struct Entry: Sendable {
        public var calls = 0
        public var seconds = 0.0
    }

    private let lock = NSLock()
    private var entries: [String: Entry] = [:]
    private var depth = 0
    private var on = false

    public init() {}

    /// Whether ops are being timed.
    public var enabled: Bool {
        get { lock.lock(); defer { lock.unlock() }; return on }
        set { lock.lock(); on = newValue; lock.unlock() }
    }

    /// The entries, most time first.
    public var snapshot: [(name: String, entry: Entry)] {
        lock.lock(); defer { lock.unlock() }
        return entries.map { ($0.key, $0.value) }.sorted { $0.entry.seconds > $1.entry.seconds }
    }

    /// Forgets every entry.
    public func reset() {
        lock.lock(); entries = [:]; lock.unlock()
    }

    /// Runs `body`, adding its wall time to `name` when enabled and not nested in another op.
    @inline(__always)
    public func measure<R>(_ name: @autoclosure () -> String, _ body: () throws -> R) rethrows -> R {
        lock.lock()
        let outermost = on && depth == 0
        depth += 1
        lock.unlock()
        let start = outermost ? ContinuousClock.now : nil
        defer {
            lock.lock()
            depth -= 1
            if let start {
                let d = ContinuousClock.now - start
                entries[name(), default: Entry()].calls += 1
                entries[name(), default: Entry()].seconds += d.inSeconds
            }
            lock.unlock()
        }
        return try body()
    }
}
