// PowerOptions: `--power-cap WATTS` for a training run — the GPU's limit set through NVML for the
// run and put back on every way out (a killed run's limit is put back at the next start; with
// `--power-cap-dry-run` nothing is written, each write is printed) — and `--power-budget WATTS`,
// which needs no privilege: it pauses between steps to hold average power.
import ArgumentParser
import Foundation
import FrugalCUDA
import FrugalMeasure

struct PowerOptions: ParsableArguments {
    @Option(name: .customLong("power-cap"), help: ArgumentHelp(
        "Set the GPU's power limit to WATTS for the run (needs root; the previous limit is restored on exit).",
        valueName: "watts"))
    var powerCap: Double?
    @Flag(name: .customLong("power-cap-if-permitted"), help: "Without the privilege, warn and train uncapped instead of stopping.")
    var continueUncapped = false
    @Flag(name: .customLong("power-cap-dry-run"), help: ArgumentHelp(
        "Go through --power-cap (read the limit and its range through NVML, check, record, set, restore) but write nothing to the GPU: each limit it would set is printed."))
    var dryRun = false
    @Option(name: .customLong("power-budget"), help: ArgumentHelp(
        "Hold the device's average power under WATTS by pausing between steps (no privilege needed; reads NVML or RAPL).",
        valueName: "watts"))
    var powerBudget: Double?

    /// The governor of `--power-budget`, started now, or nil without one.
    func governor(_ compute: Compute) throws -> PowerGovernor? {
        guard let powerBudget else { return nil }
        guard let meter = compute.energyMeter, let governor = PowerGovernor(budgetWatts: powerBudget, meter: meter) else {
            throw failure("--power-budget needs an energy counter (NVML on a GPU, RAPL on a CPU that lets it be read); none is readable here")
        }
        print("power budget: \(Int(powerBudget)) W average (\(meter.name))")
        return governor
    }

    /// One line on how the budget went.
    static func summary(_ governor: PowerGovernor) -> String {
        String(format: "power budget %.0f W: average %.0f W, paused %.1f%% of the time", governor.budgetWatts,
               governor.averageWatts ?? 0, 100 * governor.pausedFraction)
    }

    /// Restores a limit a killed run left behind, then applies `--power-cap`.
    /// - Returns: the cap in force (keep it alive for the run, then `restore()`), or nil.
    func apply(_ compute: Compute) throws -> PowerCap? {
        guard let gpu = compute.backend as? CUDABackend else {
            if powerCap != nil { throw failure("--power-cap needs a GPU (NVML); this run is on the CPU") }
            return nil
        }
        guard let control = try? NVMLPowerControl(index: gpu.ordinal) else {
            if powerCap != nil { throw failure("--power-cap: NVML cannot be opened on this machine") }
            return nil
        }
        if dryRun && powerCap == nil { throw failure("--power-cap-dry-run needs --power-cap WATTS") }
        let device: PowerLimitControl = dryRun ? DryRunPowerControl(control) { milliwatts in
            print("power cap (dry run): would set \(control.deviceName)'s limit to \(milliwatts / 1000) W; not changed")
        } : control
        let stateFile = dryRun ? PowerCap.dryRunStateFile() : PowerCap.defaultStateFile()
        if let restored = try? PowerCap.restoreLeftover(control: device, stateFile: stateFile) {
            print("restored the power limit a stopped run left behind: \(restored / 1000) W")
        }
        guard let powerCap else { return nil }
        do {
            let cap = try PowerCap(watts: powerCap, control: device, stateFile: stateFile)
            print("power cap\(dryRun ? " (dry run)" : ""): \(cap.milliwatts / 1000) W (was \(cap.previousMilliwatts / 1000) W; restored on exit)")
            return cap
        } catch let error as PowerCapError {
            guard continueUncapped, case .notPermitted = error else { throw failure("--power-cap: \(error)") }
            print("warning: \(error); training without a cap")
            return nil
        }
    }
}
