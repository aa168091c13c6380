// SweepReport: a sweep's results per configuration — means and spreads over repeats — and its
// SpeedUp = t_base/t, MemoryUp = m_base/m and EnergyUp = e_base/e against the baseline.
import Foundation
import FrugalCore

/// A mean and its spread over repeats.
public struct Statistic: Codable, Sendable, Equatable {
    public var mean: Double
    /// Sample standard deviation (0 for one value).
    public var spread: Double
    public var count: Int

    public init(mean: Double, spread: Double, count: Int) {
        self.mean = mean
        self.spread = spread
        self.count = count
    }

    /// The mean and sample standard deviation of `values`; nil when there are none.
    public init?(_ values: [Double]) {
        guard !values.isEmpty else { return nil }
        mean = values.reduce(0, +) / Double(values.count)
        let m = mean
        spread = values.count > 1 ? (values.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(values.count - 1)).squareRoot() : 0
        count = values.count
    }

    /// `base.mean / self.mean`, with the spread propagated to first order from both relative spreads.
    public func ratio(base: Statistic) -> Statistic? {
        guard mean > 0, base.mean > 0 else { return nil }
        let r = base.mean / mean
        let relative = ((base.spread / base.mean) * (base.spread / base.mean) + (spread / mean) * (spread / mean)).squareRoot()
        return Statistic(mean: r, spread: r * relative, count: min(count, base.count))
    }
}

/// One configuration's figures over its repeats (out-of-memory and failed runs left out of the means).
public struct ConfigurationSummary: Codable, Sendable {
    public var name: String
    public var options: [String: String]
    /// Each factor's level, for a factorial cell.
    public var levels: [String: String]
    public var isBaseline: Bool
    public var runs: Int
    public var outOfMemoryRuns: Int
    public var failedRuns: Int
    /// The last failure's message.
    public var error: String?
    /// Training-loop wall time, seconds.
    public var seconds: Statistic?
    public var tokensPerSecond: Statistic?
    /// Frugal's own peak (bytes), or the process's peak RSS for results that lack it.
    public var peakBytes: Statistic?
    public var peakResidentBytes: Statistic?
    /// `frugal plan`'s predicted peak, when the runs recorded it.
    public var predictedPeakBytes: Statistic?
    public var peakByCategory: [String: Statistic]
    /// Seconds in each step phase over the run (forward, backward, optimizer, rollout).
    public var phaseSeconds: [String: Statistic] = [:]
    public var energyJoules: Statistic?
    public var averageWatts: Statistic?
    public var lossFirst: Statistic?
    public var lossLast: Statistic?
    public var speedUp: Statistic?
    public var memoryUp: Statistic?
    public var energyUp: Statistic?
    /// Not beaten on both time and peak memory by another configuration.
    public var paretoTimeMemory = false
    /// Not beaten on both time and energy by another configuration.
    public var paretoTimeEnergy = false

    /// Every run ran out of memory: the seeds' "X".
    public var isOutOfMemory: Bool { outOfMemoryRuns > 0 && outOfMemoryRuns == runs }
    /// Some run finished with figures.
    public var hasFigures: Bool { seconds != nil }
}

/// A sweep's report: per-configuration summaries and ratios to the baseline.
public struct SweepReport: Codable, Sendable {
    public var title: String
    /// When the report was made (ISO 8601).
    public var date: String
    /// The device of the first run that reported one.
    public var device: String?
    public var baseline: String?
    public var factors: [SweepFactor]
    public var configurations: [ConfigurationSummary]
    /// `frugal eval` results found beside the sweep's (`*.eval.json`).
    public var evaluations: [EvaluationSummary] = []
    /// Caveats worth printing under the tables.
    public var notes: [String]

    /// Summarizes `records` (for a repeat recorded twice, the later record counts). With a plan,
    /// configurations come in its order and records whose options no longer match it are left out.
    public init(title: String, records: [SweepRecord], plan: SweepPlan?) {
        self.title = title
        date = ISO8601DateFormatter().string(from: Date())
        factors = plan?.factors ?? []
        notes = []
        var latest = [String: SweepRecord]()
        var order = plan?.configurations.map(\.name) ?? []
        var stale = 0
        for record in records {
            if let planned = plan?.configurations.first(where: { $0.name == record.configuration }),
               planned.options != record.options {
                stale += 1
                continue
            }
            if !order.contains(record.configuration) { order.append(record.configuration) }
            latest["\(record.configuration)\u{0}\(record.repetition)"] = record
        }
        if stale > 0 { notes.append("\(stale) record(s) left out: their options differ from the sweep's plan (sweep.json).") }
        let byConfiguration = Dictionary(grouping: latest.values, by: \.configuration)
        device = records.first { !$0.result.outOfMemory && $0.result.error == nil }?.result.device
        let baselineName = plan?.baseline ?? order.first
        baseline = baselineName
        configurations = order.compactMap { name in
            guard let runs = byConfiguration[name]?.sorted(by: { $0.repetition < $1.repetition }) else { return nil }
            return Self.summarize(name: name, runs: runs, planned: plan?.configurations.first { $0.name == name },
                                  isBaseline: name == baselineName)
        }
        computeRatios()
        markPareto()
        if configurations.contains(where: { $0.peakBytes != nil && $0.peakByCategory.isEmpty }) {
            notes.append("Peak memory is the process's peak RSS where a run did not report Frugal's own peak.")
        }
        if let note = Self.deviceMemoryBaselineNote(latest.values.sorted { ($0.repetition, $0.configuration) < ($1.repetition, $1.configuration) }) {
            notes.append(note)
        }
        if let base = configurations.first(where: \.isBaseline), !base.hasFigures {
            notes.append("The baseline \(base.name) has no figures (\(base.isOutOfMemory ? "out of memory" : "failed or not run")): no ratios.")
        }
    }

    /// Whether every run started with the device's memory at its baseline — the least in use
    /// before any run, give or take 256 MiB — or which runs did not (memory a run left behind).
    static func deviceMemoryBaselineNote(_ records: [SweepRecord]) -> String? {
        let readings = records.compactMap { r in r.result.deviceMemoryInUseBefore.map { (r, $0) } }
        guard let baseline = readings.map(\.1).min() else { return nil }
        let above = readings.filter { $0.1 > baseline + (256 << 20) }
        if above.isEmpty {
            return "Device memory in use before every run: \(ByteCount.describe(baseline)) (± 256 MiB), back to its baseline each time."
        }
        return "Device memory was not back to its baseline (\(ByteCount.describe(baseline))) before: "
            + above.map { "\($0.0.configuration).r\($0.0.repetition) (\(ByteCount.describe($0.1)))" }.joined(separator: ", ") + "."
    }

    private static func summarize(name: String, runs: [SweepRecord], planned: SweepConfiguration?, isBaseline: Bool) -> ConfigurationSummary {
        let good = runs.map(\.result).filter { !$0.outOfMemory && $0.error == nil }
        func statistic(_ value: (RunResult) -> Double?) -> Statistic? { Statistic(good.compactMap(value)) }
        var categories = [String: Statistic]()
        for key in Set(good.flatMap { $0.peakByCategory?.keys.map { $0 } ?? [] }) {
            categories[key] = statistic { $0.peakByCategory?[key].map(Double.init) }
        }
        var phases = [String: Statistic]()
        for key in Set(good.flatMap { $0.phaseSeconds?.keys.map { $0 } ?? [] }) {
            phases[key] = statistic { $0.phaseSeconds?[key] }
        }
        let last = runs.last!
        var summary = ConfigurationSummary(
            name: name, options: planned?.options ?? last.options, levels: planned?.levels ?? [:], isBaseline: isBaseline,
            runs: runs.count, outOfMemoryRuns: runs.filter(\.result.outOfMemory).count,
            failedRuns: runs.filter { !$0.result.outOfMemory && $0.result.error != nil }.count,
            error: runs.last { $0.result.error != nil }?.result.error,
            seconds: statistic(\.seconds), tokensPerSecond: statistic(\.tokensPerSecond),
            peakBytes: statistic { ($0.peakBytes ?? $0.peakResidentBytes).map(Double.init) },
            peakResidentBytes: statistic { $0.peakResidentBytes.map(Double.init) },
            predictedPeakBytes: statistic { $0.predictedPeakBytes.map(Double.init) },
            peakByCategory: categories,
            energyJoules: statistic(\.energyJoules), averageWatts: statistic(\.averageWatts),
            lossFirst: statistic(\.lossFirst), lossLast: statistic(\.lossLast))
        summary.phaseSeconds = phases
        return summary
    }

    private mutating func computeRatios() {
        guard let base = configurations.first(where: \.isBaseline) else { return }
        for i in configurations.indices {
            let c = configurations[i]
            if let b = base.seconds, let t = c.seconds { configurations[i].speedUp = t.ratio(base: b) }
            if let b = base.peakBytes, let m = c.peakBytes { configurations[i].memoryUp = m.ratio(base: b) }
            if let b = base.energyJoules, let e = c.energyJoules { configurations[i].energyUp = e.ratio(base: b) }
        }
    }

    /// Marks the configurations no other beats on both figures (lower is better for both).
    private mutating func markPareto() {
        func front(_ x: (ConfigurationSummary) -> Double?, _ y: (ConfigurationSummary) -> Double?) -> Set<String> {
            let points = configurations.compactMap { c in x(c).flatMap { a in y(c).map { (c.name, a, $0) } } }
            return Set(points.filter { p in
                !points.contains { q in q.1 <= p.1 && q.2 <= p.2 && (q.1 < p.1 || q.2 < p.2) }
            }.map(\.0))
        }
        let timeMemory = front({ $0.seconds?.mean }, { $0.peakBytes?.mean })
        let timeEnergy = front({ $0.seconds?.mean }, { $0.energyJoules?.mean })
        for i in configurations.indices {
            configurations[i].paretoTimeMemory = timeMemory.contains(configurations[i].name)
            configurations[i].paretoTimeEnergy = timeEnergy.contains(configurations[i].name)
        }
    }

    /// True when some configuration measured energy.
    public var hasEnergy: Bool { configurations.contains { $0.energyJoules != nil } }
    /// The largest number of repeats of a configuration.
    public var repeats: Int { configurations.map(\.runs).max() ?? 0 }
}

extension SweepReport {
    /// Reads a sweep's folder: results.jsonl, sweep.json (the plan) when it is there, and the
    /// `frugal eval` results saved there as `*.eval.json`.
    /// - Throws: `FrugalError.missingFile` with neither results.jsonl nor evaluations;
    ///   `FrugalError.malformedFile` for a bad sweep.json or evaluation file.
    public static func load(directory: URL, title: String? = nil) throws -> SweepReport {
        let results = directory.appendingPathComponent("results.jsonl")
        let evaluations = try EvaluationSummary.load(directory: directory)
        let name = title ?? "Sweep \(directory.standardizedFileURL.lastPathComponent)"
        guard FileManager.default.fileExists(atPath: results.path) else {
            guard !evaluations.isEmpty else {
                throw FrugalError.missingFile(path: results.path, what: "a sweep's results (run `frugal sweep` first) or evaluations (*.eval.json)")
            }
            var report = SweepReport(title: name, records: [], plan: nil)
            report.evaluations = evaluations
            return report
        }
        let planFile = directory.appendingPathComponent("sweep.json")
        var plan: SweepPlan?
        if let data = FileManager.default.contents(atPath: planFile.path) {
            do {
                plan = try JSONDecoder().decode(SweepPlan.self, from: data)
            } catch {
                throw FrugalError.malformedFile(path: planFile.path, problem: "not a sweep plan: \(error)")
            }
        }
        let (records, unreadable) = SweepRunner.readRecords(results)
        var report = SweepReport(title: name, records: records, plan: plan)
        report.evaluations = evaluations
        if unreadable > 0 { report.notes.append("\(unreadable) line(s) of results.jsonl could not be read and were left out.") }
        return report
    }
}
