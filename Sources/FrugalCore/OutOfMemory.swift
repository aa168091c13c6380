// OutOfMemory: an allocation that did not fit — what was asked, what the device had, Frugal's own
// memory by category, and what `frugal plan` suggests instead.
import Foundation

/// Not enough memory for one allocation.
///
/// Ops cannot throw, so a backend that runs out reports this and ends the process (`stop()`): a
/// run loses the work since its last checkpoint, nothing more. `frugal sweep` records such a run
/// as out of memory (the seeds' "X").
public struct OutOfMemory: Error, CustomStringConvertible, Sendable {
    public var device: DeviceKind
    /// Bytes asked for, and what they were for.
    public var requested: Int
    public var category: MemoryCategory
    /// Bytes free and in all, as the device — or the `--memory-limit` budget — counts them.
    public var free: Int
    public var total: Int
    /// Whether `total` is Frugal's own budget (`MemoryLedger.limit`) rather than the device's.
    public var isBudget: Bool
    /// Frugal's allocations when it failed: current and peak by category.
    public var memory: MemorySnapshot
    /// A configuration that fits (`MemoryLedger.advice`).
    public var advice: String?

    public init(device: DeviceKind, requested: Int, category: MemoryCategory, free: Int, total: Int, isBudget: Bool,
                memory: MemorySnapshot, advice: String?) {
        self.device = device; self.requested = requested; self.category = category; self.free = free
        self.total = total; self.isBudget = isBudget; self.memory = memory; self.advice = advice
    }

    /// The failure of a request for `requested` bytes against `ledger`'s budget.
    public static func overBudget(_ ledger: MemoryLedger, device: DeviceKind, requested: Int,
                                  category: MemoryCategory) -> OutOfMemory {
        let memory = ledger.snapshot, limit = ledger.limit ?? 0
        return OutOfMemory(device: device, requested: requested, category: category, free: max(0, limit - memory.currentTotal),
                           total: limit, isBudget: true, memory: memory, advice: ledger.advice)
    }

    public var description: String {
        let memoryName = device == .cuda ? "GPU memory" : "host memory"
        let of = isBudget ? "the --memory-limit of \(ByteCount.describe(total))" : ByteCount.describe(total)
        let held = MemoryCategory.allCases.compactMap { c -> String? in
            let peak = memory.peak[c, default: 0]
            return peak > 0 ? "\(c.rawValue) \(ByteCount.describe(memory.current[c, default: 0]))/\(ByteCount.describe(peak))" : nil
        }
        return "out of \(memoryName): asked \(ByteCount.describe(requested)) for \(category.rawValue), \(ByteCount.describe(free)) free of \(of). "
            + "Frugal holds \(ByteCount.describe(memory.currentTotal)) (peak \(ByteCount.describe(memory.peakTotal)); now/peak by category: "
            + held.joined(separator: ", ") + "). "
            + (advice.map { "`frugal plan` suggests: \($0)" } ?? "`frugal plan` shows what fits; --auto-batch picks a micro-batch that does")
    }

    /// Writes the report as one line on standard error and ends the process with status 1.
    public func stop() -> Never {
        FileHandle.standardError.write(Data(("error: " + description + "\n").utf8))
        exit(1)
    }
}
