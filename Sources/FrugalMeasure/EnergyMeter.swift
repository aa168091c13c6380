// EnergyMeter: a device's cumulative energy counter, read over start/stop windows into joules,
// average watts and a sampled power timeline. RAPL (CPU powercap files) lives here; NVML's meter
// comes with the CUDA backend and conforms to the same protocol.
import Foundation
import FrugalCore

/// A cumulative energy counter: the seam between a device's power telemetry and the measurements.
///
/// A meter reports "not available" as `nil` — never a made-up zero — when its counter cannot be
/// read. Conformers unfold counter wrap-around themselves, so readings only grow.
public protocol EnergyMeter: AnyObject, Sendable {
    /// What the meter reads, in words ("RAPL: package-0, dram").
    var name: String { get }
    /// The energy counted since an arbitrary origin, in joules; nil when the counter is unreadable.
    func cumulativeJoules() -> Double?
}

// MARK: - Windows

extension EnergyMeter {
    /// Opens a measurement window; the counter is sampled every `interval` on a background thread
    /// (or only at start, stop and explicit `sample()` calls when `interval` is nil).
    /// - Returns: nil when the counter cannot be read now.
    public func start(sampling interval: Duration? = .milliseconds(500)) -> EnergyWindow? {
        EnergyWindow(meter: self, interval: interval)
    }
}

/// One instant of a power timeline: average power over the interval that ends at `seconds`.
public struct PowerSample: Codable, Sendable, Equatable {
    /// Seconds since the window started.
    public var seconds: Double
    public var watts: Double

    public init(seconds: Double, watts: Double) {
        self.seconds = seconds
        self.watts = watts
    }
}

/// What a closed window measured.
public struct EnergyMeasurement: Codable, Sendable {
    /// The meter's `name`.
    public var meter: String
    public var joules: Double
    public var seconds: Double
    /// joules / seconds; nil for a window of zero length.
    public var averageWatts: Double?
    /// Power between successive samples.
    public var timeline: [PowerSample]
}

/// A measurement window over an `EnergyMeter`: start, sample, stop.
public final class EnergyWindow: @unchecked Sendable {
    private let meter: any EnergyMeter
    private let started = ContinuousClock.now
    private let lock = NSLock()
    /// (seconds since start, cumulative joules), in time order; the first is the start reading.
    private var readings: [(Double, Double)]
    /// Set when a reading failed: the window then measures nothing.
    private var failed = false
    private var sampler: DispatchSourceTimer?

    fileprivate init?(meter: any EnergyMeter, interval: Duration?) {
        guard let joules = meter.cumulativeJoules() else { return nil }
        self.meter = meter
        readings = [(0, joules)]
        if let interval {
            let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "frugal.energy-sampler"))
            let nanoseconds = Int(interval.components.seconds * 1_000_000_000 + interval.components.attoseconds / 1_000_000_000)
            timer.schedule(deadline: .now() + .nanoseconds(nanoseconds), repeating: .nanoseconds(max(nanoseconds, 1_000_000)))
            timer.setEventHandler { [weak self] in self?.sample() }
            timer.resume()
            sampler = timer
        }
    }

    deinit { sampler?.cancel() }

    /// Reads the counter now and adds the reading to the timeline.
    public func sample() {
        let joules = meter.cumulativeJoules()
        let elapsed = (ContinuousClock.now - started).inSeconds
        lock.lock(); defer { lock.unlock() }
        guard let joules else { failed = true; return }
        readings.append((elapsed, joules))
    }

    /// Closes the window.
    /// - Returns: the energy, average power and timeline; nil when any reading failed.
    public func stop() -> EnergyMeasurement? {
        sampler?.cancel()
        sampler = nil
        sample()
        lock.lock(); defer { lock.unlock() }
        guard !failed, let first = readings.first, let last = readings.last else { return nil }
        var timeline = [PowerSample]()
        for (a, b) in zip(readings, readings.dropFirst()) where b.0 > a.0 {
            timeline.append(PowerSample(seconds: b.0, watts: (b.1 - a.1) / (b.0 - a.0)))
        }
        let joules = last.1 - first.1, seconds = last.0 - first.0
        return EnergyMeasurement(meter: meter.name, joules: joules, seconds: seconds,
                                 averageWatts: seconds > 0 ? joules / seconds : nil, timeline: timeline)
    }
}

// MARK: - RAPL

/// Intel/AMD RAPL energy counters from Linux's powercap files
/// (`/sys/class/powercap/intel-rapl:N/energy_uj`, microjoules, wrapping at `max_energy_range_uj`).
///
/// Sums the top-level package domains and any `dram` subdomain (dram is not part of a package's
/// count); `psys` (the whole platform, which includes the packages) is left out. Since 2020 the
/// counters are readable only by root on most kernels; `init` then fails, and so a run reports
/// energy as not available.
public final class RAPLMeter: EnergyMeter, @unchecked Sendable {
    /// One counter file and its unfolding state.
    private struct Domain {
        var name: String
        var energy: URL
        /// The counter's range: it wraps to zero after `range - 1` microjoules.
        var range: UInt64?
        var last: UInt64
        var wraps: UInt64 = 0
    }

    public let name: String
    private let lock = NSLock()
    private var domains: [Domain]

    /// Finds the readable RAPL domains under `root`.
    /// - Returns: nil when there is none, or one of them cannot be read.
    public init?(root: URL = URL(fileURLWithPath: "/sys/class/powercap")) {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: root.path) else { return nil }
        var found = [Domain]()
        for entry in entries.sorted() where entry.hasPrefix("intel-rapl:") {
            let folder = root.appendingPathComponent(entry)
            let label = Self.read(folder.appendingPathComponent("name")) ?? entry
            let isPackage = entry.split(separator: ":").count == 2
            guard (isPackage && label != "psys") || label == "dram" else { continue }
            let energy = folder.appendingPathComponent("energy_uj")
            guard let value = Self.read(energy).flatMap(UInt64.init) else { return nil }
            let range = Self.read(folder.appendingPathComponent("max_energy_range_uj")).flatMap(UInt64.init)
            found.append(Domain(name: label, energy: energy, range: range, last: value))
        }
        guard !found.isEmpty else { return nil }
        domains = found
        name = "RAPL: " + found.map(\.name).joined(separator: ", ")
    }

    /// Sums the domains' counters, unfolding wrap-around: a reading below the previous one means the
    /// counter passed `max_energy_range_uj` once. Sample more often than the counter can wrap
    /// (minutes at a few hundred watts).
    public func cumulativeJoules() -> Double? {
        lock.lock(); defer { lock.unlock() }
        var microjoules = 0.0
        for i in domains.indices {
            guard let value = Self.read(domains[i].energy).flatMap(UInt64.init) else { return nil }
            if value < domains[i].last {
                guard domains[i].range != nil else { return nil }
                domains[i].wraps += 1
            }
            domains[i].last = value
            microjoules += Double(domains[i].wraps) * Double(domains[i].range ?? 0) + Double(value)
        }
        return microjoules * 1e-6
    }

    private static func read(_ url: URL) -> String? {
        guard let data = FileManager.default.contents(atPath: url.path),
              let text = String(data: data, encoding: .utf8) else { return nil }
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return trimmed.isEmpty ? nil : trimmed
    }
}
