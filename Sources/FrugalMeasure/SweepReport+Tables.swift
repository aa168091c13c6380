// The report's tables: the seeds' combination table (their Table 2), SpeedUp/MemoryUp/EnergyUp per
// configuration, the measured memory breakdown, and a flat CSV of every figure.
import Foundation
import FrugalCore

extension SweepReport {
    /// How the combination table shows a factor: the seeds' name and OFF/ON for the optimizations they
    /// study, the option name and its values otherwise.
    struct FactorDisplay {
        var factor: SweepFactor
        var label: String
        var levelLabel: (String) -> String
        /// Where the factor goes in the seeds' order (GA, GC, MP, LoRA); nil when they do not study it.
        var seedRank: Int?
        var isOff: (String) -> Bool = { _ in false }

        init(_ factor: SweepFactor) {
            self.factor = factor
            func onOff(_ off: @escaping (String) -> Bool, detail: Bool) -> (String) -> String {
                { off($0) ? "OFF" : detail ? "ON (\($0))" : "ON" }
            }
            switch factor.name {
            case "grad-accum":
                label = "GA"; seedRank = 0; isOff = { $0 == "1" }
            case "checkpointing":
                label = "GC"; seedRank = 1; isOff = { $0.lowercased() == "false" }
            case "precision":
                label = "MP"; seedRank = 2; isOff = { $0 == "fp32" }
            case "method":
                label = "LoRA"; seedRank = 3; isOff = { $0 == "full" }
            default:
                label = factor.name; seedRank = nil
            }
            let off = isOff
            let detail = factor.name == "grad-accum" || factor.name == "precision"
            levelLabel = seedRank == nil ? { $0 } : onOff(off, detail: detail)
        }
    }

    /// The factors as the combination table lays them out: in the seeds' order with OFF before ON when
    /// every factor is one the seeds study, else as the sweep gives them.
    var factorDisplays: [FactorDisplay] {
        var displays = factors.map(FactorDisplay.init)
        if displays.allSatisfy({ $0.seedRank != nil }) {
            displays.sort { $0.seedRank! < $1.seedRank! }
            for i in displays.indices {
                let d = displays[i]
                displays[i].factor.levels = d.factor.levels.filter { d.isOff($0.value) } + d.factor.levels.filter { !d.isOff($0.value) }
            }
        }
        return displays
    }

    /// The seeds' combination table: a column per factorial cell under one header row per factor, rows
    /// of peak memory, runtime, throughput, loss (and energy); "X" where the cell ran out of memory.
    /// - Returns: nil for a sweep without factors.
    public var combinationTable: ReportTable? {
        let displays = factorDisplays
        guard !displays.isEmpty else { return nil }
        var cells: [[(FactorDisplay, SweepLevel)]] = [[]]
        for d in displays { cells = cells.flatMap { cell in d.factor.levels.map { cell + [(d, $0)] } } }
        let header = displays.map { d in [d.label] + cells.map { cell in d.levelLabel(cell.first { $0.0.factor.name == d.factor.name }!.1.value) } }
        let summaries = cells.map { cell in
            configurations.first { c in cell.allSatisfy { c.levels[$0.0.factor.name] == $0.1.value } }
        }
        func row(_ label: String, _ value: (ConfigurationSummary) -> String?) -> [String] {
            [label] + summaries.map { s in
                guard let s else { return "—" }
                if s.isOutOfMemory { return "X" }
                if !s.hasFigures { return "failed" }
                return value(s) ?? "n/a"
            }
        }
        var rows = [
            row("Peak mem (MiB)") { $0.peakBytes.map { Self.mebibytes($0.mean) } },
            row("Peak RSS (MiB)") { $0.peakResidentBytes.map { Self.mebibytes($0.mean) } },
            row("Runtime (s)") { $0.seconds.map { Self.fixed($0.mean, 2) } },
            row("Tokens/s") { $0.tokensPerSecond.map { Self.fixed($0.mean, 1) } },
            row("Loss, first step") { $0.lossFirst.map { Self.fixed($0.mean, 4) } },
            row("Loss, last step") { $0.lossLast.map { Self.fixed($0.mean, 4) } },
        ]
        if hasEnergy { rows.append(row("Energy (J)") { $0.energyJoules.map { Self.fixed($0.mean, 1) } }) }
        var notes = ["X: out of memory; —: not run."]
        if repeats > 1 { notes.append("Means over up to \(repeats) repeats.") }
        let named = displays.filter { $0.seedRank != nil }.map { d -> String in
            switch d.factor.name {
            case "grad-accum": "GA: gradient accumulation"
            case "checkpointing": "GC: activation checkpointing"
            case "precision": "MP: mixed precision (OFF = fp32)"
            default: "LoRA: OFF = full fine-tune"
            }
        }
        if !named.isEmpty { notes.append(named.joined(separator: "; ") + ".") }
        return ReportTable(title: "Combinations (\(displays.map(\.label).joined(separator: " × ")))",
                           header: header, rows: rows, notes: notes)
    }

    /// SpeedUp, MemoryUp and EnergyUp of every configuration against the baseline, with spreads.
    public var efficiencyTable: ReportTable {
        let header = [["Configuration", "Runs", "Runtime (s)", "Tokens/s", "Peak mem (MiB)", "Energy (J)",
                       "SpeedUp", "MemoryUp", "EnergyUp", "Loss (last)"]]
        let rows = configurations.map { c -> [String] in
            let name = c.name + (c.isBaseline ? " (base)" : "")
            let runs = "\(c.runs)" + (c.outOfMemoryRuns > 0 && !c.isOutOfMemory ? " (\(c.outOfMemoryRuns) X)" : "")
            if c.isOutOfMemory { return [name, runs] + Array(repeating: "X", count: 8) }
            if !c.hasFigures { return [name, runs] + Array(repeating: "failed", count: 8) }
            return [name, runs,
                    Self.withSpread(c.seconds, 2), Self.withSpread(c.tokensPerSecond, 1),
                    Self.withSpread(c.peakBytes.map { Statistic(mean: $0.mean / 1_048_576, spread: $0.spread / 1_048_576, count: $0.count) }, 1),
                    Self.withSpread(c.energyJoules, 1),
                    Self.withSpread(c.speedUp, 2), Self.withSpread(c.memoryUp, 2), Self.withSpread(c.energyUp, 2),
                    Self.withSpread(c.lossLast, 4)]
        }
        var notes = ["SpeedUp = t_base/t, MemoryUp = m_base/m, EnergyUp = e_base/e against \(baseline ?? "the first configuration"); above 1 is better."]
        if repeats > 1 { notes.append("± is the sample standard deviation over repeats (ratios: propagated from both).") }
        if !hasEnergy { notes.append("Energy: n/a — no readable energy counter (RAPL powercap or NVML) on this device.") }
        for c in configurations where c.failedRuns > 0 {
            notes.append("\(c.name): \(c.failedRuns) run(s) failed: \(c.error ?? "")")
        }
        return ReportTable(title: "SpeedUp / MemoryUp / EnergyUp", header: header, rows: rows, notes: notes)
    }

    /// Peak memory by category per configuration (the seeds' Table 1, measured), with the total,
    /// `frugal plan`'s prediction of it, and RSS.
    public var memoryTable: ReportTable {
        let categories = MemoryCategory.allCases.map(\.rawValue)
        let header = [["Configuration"] + categories + ["Peak total", "Predicted", "Peak RSS"]]
        var worst: Double?
        let rows = configurations.map { c -> [String] in
            // Out of memory: no figures, but the prediction says how far over it was.
            let predicted = c.predictedPeakBytes.map { Self.mebibytes($0.mean) } ?? "—"
            if c.isOutOfMemory { return [c.name] + Array(repeating: "X", count: categories.count + 1) + [predicted, "X"] }
            // A run that reported categories allocated nothing in the ones it left out.
            let absent = c.peakByCategory.isEmpty ? "—" : "0.0"
            var predictedCell = predicted
            if let p = c.predictedPeakBytes?.mean, let m = c.peakBytes?.mean, m > 0, !c.peakByCategory.isEmpty {
                let error = p / m - 1
                predictedCell += String(format: " (%+.1f%%)", 100 * error)
                worst = max(worst ?? 0, abs(error))
            }
            return [c.name] + categories.map { c.peakByCategory[$0].map { Self.mebibytes($0.mean) } ?? absent }
                + [c.peakBytes.map { Self.mebibytes($0.mean) } ?? "—", predictedCell,
                   c.peakResidentBytes.map { Self.mebibytes($0.mean) } ?? "—"]
        }
        var notes = [
            "Each category's own peak; the total is the peak of their sum, so it can be less than the row's sum.",
            "RSS is the process's peak resident memory as the OS counts it (model file mappings, runtime and buffers included).",
        ]
        if let worst {
            notes.append(String(format: "Predicted: `frugal plan`'s peak for the run, made before it started (the weights as loaded); at most %.1f%% from the measured total here.", 100 * worst))
        }
        return ReportTable(title: "Peak memory by category (MiB)", header: header, rows: rows, notes: notes)
    }

    /// Where each configuration's training time went, phase by phase (device time: events on the
    /// GPU), with each phase's share; nil when no run timed its phases.
    public var phaseTable: ReportTable? {
        let phases = StepPhase.allCases.map(\.rawValue).filter { p in configurations.contains { $0.phaseSeconds[p] != nil } }
        guard !phases.isEmpty else { return nil }
        let rows = configurations.map { c -> [String] in
            if c.isOutOfMemory { return [c.name] + Array(repeating: "X", count: phases.count) }
            let total = phases.reduce(0) { $0 + (c.phaseSeconds[$1]?.mean ?? 0) }
            return [c.name] + phases.map { p in
                c.phaseSeconds[p].map { Self.fixed($0.mean, 2) + (total > 0 ? String(format: " (%.0f%%)", 100 * $0.mean / total) : "") } ?? "—"
            }
        }
        return ReportTable(title: "Time by step phase (s)", header: [["Configuration"] + phases], rows: rows, notes: [
            "Summed over each run's steps; on the GPU from events on its stream, on the CPU from the clock. The fused optimizer step's updates count as optimizer.",
        ])
    }

    /// Every figure of every configuration, one row each, in plain units (seconds, bytes, joules).
    public var csv: String {
        let categories = MemoryCategory.allCases.map(\.rawValue)
        var header = ["configuration", "baseline"] + factors.map(\.name)
        header += ["runs", "out_of_memory_runs", "failed_runs", "out_of_memory"]
        for figure in ["seconds", "tokens_per_second", "peak_bytes", "predicted_peak_bytes", "peak_resident_bytes",
                       "energy_joules", "average_watts",
                       "speedup", "memoryup", "energyup", "loss_first", "loss_last"] {
            header += [figure, figure + "_spread"]
        }
        header += categories.map { "peak_" + $0 + "_bytes" } + ["pareto_time_memory", "pareto_time_energy"]
        var lines = [header]
        for c in configurations {
            var row = [c.name, c.isBaseline ? "true" : "false"] + factors.map { c.levels[$0.name] ?? c.options[$0.name] ?? "" }
            row += ["\(c.runs)", "\(c.outOfMemoryRuns)", "\(c.failedRuns)", c.isOutOfMemory ? "true" : "false"]
            for s in [c.seconds, c.tokensPerSecond, c.peakBytes, c.predictedPeakBytes, c.peakResidentBytes, c.energyJoules, c.averageWatts,
                      c.speedUp, c.memoryUp, c.energyUp, c.lossFirst, c.lossLast] {
                row += [s.map { "\($0.mean)" } ?? "", s.map { "\($0.spread)" } ?? ""]
            }
            row += categories.map { c.peakByCategory[$0].map { "\(Int($0.mean.rounded()))" } ?? "" }
            row += [c.paretoTimeMemory ? "true" : "false", c.paretoTimeEnergy ? "true" : "false"]
            lines.append(row)
        }
        return lines.map { $0.map(ReportTable.csvField).joined(separator: ",") }.joined(separator: "\r\n") + "\r\n"
    }

    // MARK: - Numbers

    static func fixed(_ value: Double, _ decimals: Int) -> String { String(format: "%.\(decimals)f", value) }
    static func mebibytes(_ bytes: Double) -> String { fixed(bytes / 1_048_576, 1) }
    static func withSpread(_ s: Statistic?, _ decimals: Int) -> String {
        guard let s else { return "n/a" }
        return s.count > 1 ? "\(fixed(s.mean, decimals)) ± \(fixed(s.spread, decimals))" : fixed(s.mean, decimals)
    }
}
