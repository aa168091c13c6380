// The hardware power cap against a fake NVML: the previous limit is on disk before the limit
// changes, it is put back by restore (once) and by deinit, a killed run's limit is put back at
// the next start, and a missing privilege changes nothing.
import Foundation
import XCTest
@testable import FrugalMeasure

/// An in-memory power limit with NVML's behaviour: a range, and "not permitted" without root.
final class FakePowerControl: PowerLimitControl {
    let deviceName: String
    var limit: Int
    var permitted: Bool
    private(set) var changes: [Int] = []
    /// The state file's content at the moment of each change.
    private(set) var stateAtChange: [Data?] = []
    let stateFile: URL

    init(deviceName: String = "Fake GPU", limit: Int = 700_000, permitted: Bool = true, stateFile: URL) {
        self.deviceName = deviceName; self.limit = limit; self.permitted = permitted; self.stateFile = stateFile
    }

    func powerLimit() throws -> Int { limit }
    func powerLimitRange() throws -> ClosedRange<Int> { 200_000...700_000 }
    func setPowerLimit(milliwatts: Int) throws {
        guard permitted else { throw PowerCapError.notPermitted(device: deviceName) }
        stateAtChange.append(FileManager.default.contents(atPath: stateFile.path))
        changes.append(milliwatts)
        limit = milliwatts
    }
}

final class PowerCapTests: XCTestCase {
    private var stateFile: URL!

    override func setUp() {
        stateFile = FileManager.default.temporaryDirectory.appendingPathComponent("frugal-power-\(UUID().uuidString)/power-limit.json")
    }

    override func tearDown() { try? FileManager.default.removeItem(at: stateFile.deletingLastPathComponent()) }

    func testCapIsRecordedBeforeItIsSetAndRestoredOnce() throws {
        let gpu = FakePowerControl(stateFile: stateFile)
        let cap = try PowerCap(watts: 300, control: gpu, stateFile: stateFile)
        XCTAssertEqual(gpu.limit, 300_000)
        XCTAssertEqual(cap.previousMilliwatts, 700_000)
        let recorded = try XCTUnwrap(gpu.stateAtChange.first ?? nil, "no state file when the limit changed")
        XCTAssertEqual(try JSONDecoder().decode(PowerCap.State.self, from: recorded),
                       PowerCap.State(device: "Fake GPU", previousMilliwatts: 700_000))
        try cap.restore()
        try cap.restore()
        XCTAssertEqual(gpu.limit, 700_000)
        XCTAssertEqual(gpu.changes, [300_000, 700_000])
        XCTAssertFalse(FileManager.default.fileExists(atPath: stateFile.path))
    }

    func testACapLetGoOfIsRestored() throws {
        let gpu = FakePowerControl(stateFile: stateFile)
        do { _ = try PowerCap(watts: 450, control: gpu, stateFile: stateFile) }
        XCTAssertEqual(gpu.changes, [450_000, 700_000])
        XCTAssertFalse(FileManager.default.fileExists(atPath: stateFile.path))
    }

    /// A run killed while capped leaves its state file; the next start restores that limit.
    func testAKilledRunsLimitIsRestoredAtTheNextStart() throws {
        let gpu = FakePowerControl(stateFile: stateFile)
        let cap = try PowerCap(watts: 300, control: gpu, stateFile: stateFile)
        let leftBehind = try Data(contentsOf: stateFile)
        try cap.restore()
        // As after SIGKILL: the GPU still capped, the state file still there.
        gpu.limit = 300_000
        try leftBehind.write(to: stateFile)
        XCTAssertEqual(try PowerCap.restoreLeftover(control: gpu, stateFile: stateFile), 700_000)
        XCTAssertEqual(gpu.limit, 700_000)
        XCTAssertFalse(FileManager.default.fileExists(atPath: stateFile.path))
        XCTAssertNil(try PowerCap.restoreLeftover(control: gpu, stateFile: stateFile), "nothing left to restore")
        // Another GPU's leftover is not applied here.
        try leftBehind.write(to: stateFile)
        let other = FakePowerControl(deviceName: "Other GPU", limit: 250_000, stateFile: stateFile)
        XCTAssertNil(try PowerCap.restoreLeftover(control: other, stateFile: stateFile))
        XCTAssertEqual(other.limit, 250_000)
    }

    func testWithoutThePrivilegeNothingChanges() {
        let gpu = FakePowerControl(permitted: false, stateFile: stateFile)
        XCTAssertThrowsError(try PowerCap(watts: 300, control: gpu, stateFile: stateFile)) { error in
            XCTAssertEqual(error as? PowerCapError, .notPermitted(device: "Fake GPU"))
            XCTAssertTrue("\(error)".contains("--power-budget"), "\(error)")
        }
        XCTAssertEqual(gpu.limit, 700_000)
        XCTAssertFalse(FileManager.default.fileExists(atPath: stateFile.path), "a state file was left for a cap never set")
    }

    func testALimitOutsideTheRangeIsRefused() {
        let gpu = FakePowerControl(stateFile: stateFile)
        XCTAssertThrowsError(try PowerCap(watts: 900, control: gpu, stateFile: stateFile)) { error in
            XCTAssertEqual(error as? PowerCapError, .outOfRange(requested: 900_000, range: 200_000...700_000))
        }
        XCTAssertEqual(gpu.changes, [])
    }

    /// A dry run reads the real limit and range and goes through set and restore, writing nothing.
    func testADryRunReadsTheDeviceAndChangesNothing() throws {
        let gpu = FakePowerControl(stateFile: stateFile)
        var reported: [Int] = []
        let dry = DryRunPowerControl(gpu) { reported.append($0) }
        let cap = try PowerCap(watts: 300, control: dry, stateFile: stateFile)
        XCTAssertEqual(cap.previousMilliwatts, 700_000)
        XCTAssertTrue(FileManager.default.fileExists(atPath: stateFile.path), "the state file is written as for a real cap")
        try cap.restore()
        XCTAssertEqual(dry.writes, [300_000, 700_000])
        XCTAssertEqual(reported, [300_000, 700_000])
        XCTAssertEqual(gpu.changes, [], "the device was written")
        XCTAssertEqual(gpu.limit, 700_000)
        XCTAssertFalse(FileManager.default.fileExists(atPath: stateFile.path))
        XCTAssertThrowsError(try PowerCap(watts: 900, control: DryRunPowerControl(gpu), stateFile: stateFile)) { error in
            XCTAssertEqual(error as? PowerCapError, .outOfRange(requested: 900_000, range: 200_000...700_000))
        }
        XCTAssertEqual(PowerCap.dryRunStateFile(environment: ["FRUGAL_CACHE": "/c"]).path, "/c/power-limit.dry-run.json")
    }
}
