// RunResult: what one training run cost — time, memory by category, energy — as one JSON file.
import Foundation
import FrugalCore

/// The measured outcome of one run; `frugal sweep` collects them and `frugal report` compares them.
public struct RunResult: Codable, Sendable {
    /// The run's name within a sweep (or "train").
    public var name: String
    /// ISO-8601 date and time the run ended.
    public var date: String
    /// The device, in words ("CPU, 2 cores, /usr/lib/…/libopenblas.so.0").
    public var device: String
    /// The command line that ran it.
    public var command: String
    /// Settings that distinguish runs in a sweep (method, precision, grad_accum, checkpointing, …).
    public var settings: [String: String]
    /// True when the run stopped for lack of memory (the seeds' "X" cells); figures are then absent.
    public var outOfMemory = false
    /// Why the run failed, when it did.
    public var error: String?
    public var steps: Int?
    public var tokens: Int?
    /// Wall time of the training loop (seconds).
    public var seconds: Double?
    public var tokensPerSecond: Double?
    /// Frugal's own peak (sum over categories at its highest) and the peak of each category, bytes.
    public var peakBytes: Int?
    public var peakByCategory: [String: Int]?
    /// Peak host memory held for the device by category (an offloaded optimizer, offloaded
    /// activations); nil when nothing was offloaded.
    public var hostPeakByCategory: [String: Int]?
    /// `frugal plan`'s prediction of `peakBytes` for this run, made before it started.
    public var predictedPeakBytes: Int?
    /// Device memory in use (by any process, as the driver counts it) just before the run started;
    /// `frugal sweep` records it on a GPU to show that every run starts from the same baseline.
    public var deviceMemoryInUseBefore: Int?
    /// The process's peak resident memory (bytes), as the OS counts it.
    public var peakResidentBytes: Int?
    /// Energy over the training loop (joules) and average power (watts); nil when no meter is readable.
    public var energyJoules: Double?
    public var averageWatts: Double?
    /// Power sampled through the training loop (every 0.5 s); nil when no meter is readable.
    public var powerTimeline: [PowerSample]?
    /// Seconds of each phase of the steps on the device ("forward", "backward", "optimizer"),
    /// summed over the run.
    public var phaseSeconds: [String: Double]?
    public var lossFirst: Double?
    public var lossLast: Double?

    public init(name: String, device: String, command: String, settings: [String: String]) {
        self.name = name
        self.date = ISO8601DateFormatter().string(from: Date())
        self.device = device
        self.command = command
        self.settings = settings
    }

    /// Fills the memory figures from the device's ledger snapshot, the host's (what was offloaded),
    /// and the process's peak RSS.
    public mutating func record(memory: MemorySnapshot, host: MemorySnapshot = MemorySnapshot()) {
        peakBytes = memory.peakTotal
        peakByCategory = Dictionary(uniqueKeysWithValues: memory.peak.map { ($0.key.rawValue, $0.value) })
        hostPeakByCategory = host.peakTotal > 0 ? Dictionary(uniqueKeysWithValues: host.peak.map { ($0.key.rawValue, $0.value) }) : nil
        peakResidentBytes = Self.processPeakResidentBytes()
    }

    /// Fills the energy figures from a closed measurement window (nil: not available).
    public mutating func record(energy: EnergyMeasurement?) {
        energyJoules = energy?.joules
        averageWatts = energy?.averageWatts
        powerTimeline = energy?.timeline
    }

    /// The process's peak resident set size (getrusage), in bytes.
    public static func processPeakResidentBytes() -> Int {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Int(usage.ru_maxrss) * 1024
    }

    /// Writes the result as pretty JSON to `url`, atomically enough for one writer (temp + rename).
    public func write(to url: URL) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp")
        try encoder.encode(self).write(to: temporary)
        guard rename(temporary.path, url.path) == 0 else {
            throw FrugalError.invalidArgument("\(url.path): cannot write the result: \(String(cString: strerror(errno)))")
        }
    }
}
