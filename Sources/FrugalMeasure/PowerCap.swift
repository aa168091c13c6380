// PowerCap: a hardware power limit set for the length of a run and always put back — the
// previous limit is written to disk before anything changes, restored on every exit path the
// process lives through, and restored at the next start after one it did not (SIGKILL, a crash).
import Foundation
import FrugalCore

/// A device's adjustable power limit: the seam between NVML and the cap (tests use a fake).
public protocol PowerLimitControl: AnyObject {
    /// Which device, in words ("NVIDIA H100 80GB HBM3").
    var deviceName: String { get }
    /// The limit in force, milliwatts.
    func powerLimit() throws -> Int
    /// The range the limit may be set in, milliwatts.
    func powerLimitRange() throws -> ClosedRange<Int>
    /// Sets the limit, milliwatts; throws `PowerCapError.notPermitted` without the privilege.
    func setPowerLimit(milliwatts: Int) throws
}

/// Why a power cap could not be set.
public enum PowerCapError: Error, CustomStringConvertible, Equatable {
    /// The process may not change the limit (NVML's "no permission": not root).
    case notPermitted(device: String)
    /// The requested limit lies outside what the device accepts.
    case outOfRange(requested: Int, range: ClosedRange<Int>)

    public var description: String {
        switch self {
        case let .notPermitted(device):
            "changing the power limit of \(device) is not permitted (it needs root); --power-budget paces the work without privilege"
        case let .outOfRange(requested, range):
            "a power cap of \(requested / 1000) W is outside \(range.lowerBound / 1000)–\(range.upperBound / 1000) W"
        }
    }
}

/// A power limit in force until `restore()`, with the limit it replaced on disk meanwhile.
public final class PowerCap {
    /// What the state file holds: the device and the limit to put back.
    struct State: Codable, Equatable {
        var device: String
        var previousMilliwatts: Int
    }

    public let control: PowerLimitControl
    public let milliwatts: Int
    public let previousMilliwatts: Int
    private let stateFile: URL
    private var restored = false

    /// The default state file: ~/.cache/frugal/power-limit.json (or $FRUGAL_CACHE).
    public static func defaultStateFile(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        URL(fileURLWithPath: environment["FRUGAL_CACHE"] ?? (NSHomeDirectory() + "/.cache/frugal"))
            .appendingPathComponent("power-limit.json")
    }

    /// Records the limit in force in `stateFile`, then sets `watts`.
    /// - Throws: `PowerCapError` (the state file is then removed again) or the control's error.
    public init(watts: Double, control: PowerLimitControl, stateFile: URL = PowerCap.defaultStateFile()) throws {
        self.control = control
        self.stateFile = stateFile
        milliwatts = Int((watts * 1000).rounded())
        let range = try control.powerLimitRange()
        guard range.contains(milliwatts) else { throw PowerCapError.outOfRange(requested: milliwatts, range: range) }
        previousMilliwatts = try control.powerLimit()
        try FileManager.default.createDirectory(at: stateFile.deletingLastPathComponent(), withIntermediateDirectories: true)
        try JSONEncoder().encode(State(device: control.deviceName, previousMilliwatts: previousMilliwatts))
            .write(to: stateFile, options: .atomic)
        do {
            try control.setPowerLimit(milliwatts: milliwatts)
        } catch {
            try? FileManager.default.removeItem(at: stateFile)
            throw error
        }
    }

    deinit { try? restore() }

    /// Puts the previous limit back and removes the state file (once; later calls do nothing).
    public func restore() throws {
        guard !restored else { return }
        try control.setPowerLimit(milliwatts: previousMilliwatts)
        restored = true
        try? FileManager.default.removeItem(at: stateFile)
    }

    /// After a run that could not restore its limit (killed): puts back the limit its state file
    /// recorded for this device and removes the file.
    /// - Returns: the limit restored, milliwatts, or nil when there was nothing to restore.
    @discardableResult
    public static func restoreLeftover(control: PowerLimitControl, stateFile: URL = PowerCap.defaultStateFile()) throws -> Int? {
        guard let data = FileManager.default.contents(atPath: stateFile.path) else { return nil }
        let state = try JSONDecoder().decode(State.self, from: data)
        guard state.device == control.deviceName else { return nil }
        try control.setPowerLimit(milliwatts: state.previousMilliwatts)
        try FileManager.default.removeItem(at: stateFile)
        return state.previousMilliwatts
    }
}

/// A power limit control that reads the device's limit and range but never writes them: what a
/// cap would set is recorded (and reported through `onWrite`) instead. `--power-cap-dry-run`
/// goes through a whole cap — range check, state file, set, restore — on a machine whose
/// settings must not change.
public final class DryRunPowerControl: PowerLimitControl {
    public let device: PowerLimitControl
    /// The limits a cap would have written, in order, milliwatts.
    public private(set) var writes: [Int] = []
    /// Called with each limit a cap would have written.
    public var onWrite: (Int) -> Void

    public init(_ device: PowerLimitControl, onWrite: @escaping (Int) -> Void = { _ in }) {
        self.device = device
        self.onWrite = onWrite
    }

    public var deviceName: String { device.deviceName }
    /// The device's real limit (a dry run changes nothing).
    public func powerLimit() throws -> Int { try device.powerLimit() }
    public func powerLimitRange() throws -> ClosedRange<Int> { try device.powerLimitRange() }
    public func setPowerLimit(milliwatts: Int) throws {
        writes.append(milliwatts)
        onWrite(milliwatts)
    }
}

extension PowerCap {
    /// The state file of dry runs, apart from a real cap's: ~/.cache/frugal/power-limit.dry-run.json.
    public static func dryRunStateFile(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        defaultStateFile(environment: environment).deletingPathExtension().appendingPathExtension("dry-run.json")
    }
}
