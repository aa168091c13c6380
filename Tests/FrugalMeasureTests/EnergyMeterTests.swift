// RAPLMeter against a fake powercap folder: joules, wrap-around, and "not available" as nil.
import Foundation
import XCTest
@testable import FrugalMeasure

final class EnergyMeterTests: XCTestCase {
    /// A temporary folder laid out like /sys/class/powercap, whose counters the test rewrites.
    private final class FakePowercap {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("powercap-\(UUID().uuidString)")

        func domain(_ folder: String, name: String, energy: UInt64?, range: UInt64? = 262_143_328_850) throws {
            let url = root.appendingPathComponent(folder)
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
            try "\(name)\n".write(to: url.appendingPathComponent("name"), atomically: true, encoding: .utf8)
            if let range { try "\(range)\n".write(to: url.appendingPathComponent("max_energy_range_uj"), atomically: true, encoding: .utf8) }
            if let energy { try set(folder, energy) }
        }

        func set(_ folder: String, _ microjoules: UInt64) throws {
            try "\(microjoules)\n".write(to: root.appendingPathComponent("\(folder)/energy_uj"), atomically: true, encoding: .utf8)
        }

        deinit { try? FileManager.default.removeItem(at: root) }
    }

    func testJoulesOverAWindowSumPackagesAndDRAMButNotSubdomainsOrPsys() throws {
        let fake = FakePowercap()
        try fake.domain("intel-rapl:0", name: "package-0", energy: 1_000_000)
        try fake.domain("intel-rapl:0:0", name: "core", energy: 500_000)        // inside the package's count
        try fake.domain("intel-rapl:0:1", name: "dram", energy: 2_000_000)      // not inside it
        try fake.domain("intel-rapl:1", name: "psys", energy: 9_000_000)        // the whole platform
        let meter = try XCTUnwrap(RAPLMeter(root: fake.root))
        XCTAssertEqual(meter.name, "RAPL: package-0, dram")
        XCTAssertEqual(try XCTUnwrap(meter.cumulativeJoules()), 3.0, accuracy: 1e-9)

        let window = try XCTUnwrap(meter.start(sampling: nil))
        try fake.set("intel-rapl:0", 11_000_000)   // +10 J
        try fake.set("intel-rapl:0:1", 4_000_000)  // +2 J
        try fake.set("intel-rapl:0:0", 99_000_000) // ignored
        window.sample()
        try fake.set("intel-rapl:0", 15_000_000)   // +4 J
        let measured = try XCTUnwrap(window.stop())
        XCTAssertEqual(measured.joules, 16, accuracy: 1e-9)
        XCTAssertEqual(measured.timeline.count, 2)
        XCTAssertGreaterThan(measured.seconds, 0)
        XCTAssertEqual(try XCTUnwrap(measured.averageWatts), measured.joules / measured.seconds, accuracy: 1e-6)
        XCTAssertEqual(measured.meter, meter.name)
    }

    func testCounterWrapAroundIsUnfolded() throws {
        let fake = FakePowercap()
        try fake.domain("intel-rapl:0", name: "package-0", energy: 990_000_000, range: 1_000_000_000)
        let meter = try XCTUnwrap(RAPLMeter(root: fake.root))
        let window = try XCTUnwrap(meter.start(sampling: nil))
        try fake.set("intel-rapl:0", 5_000_000)    // passed 1000 J: +10 J + 5 J
        window.sample()
        try fake.set("intel-rapl:0", 8_000_000)    // +3 J
        let measured = try XCTUnwrap(window.stop())
        XCTAssertEqual(measured.joules, 18, accuracy: 1e-9)
        XCTAssertTrue(measured.timeline.allSatisfy { $0.watts > 0 })
    }

    func testUnreadableCountersAreNotAvailableNeverZero() throws {
        // No powercap folder at all (this AMD VM), or no RAPL domain in it.
        XCTAssertNil(RAPLMeter(root: URL(fileURLWithPath: "/nonexistent-\(UUID().uuidString)")))
        let fake = FakePowercap()
        try FileManager.default.createDirectory(at: fake.root, withIntermediateDirectories: true)
        XCTAssertNil(RAPLMeter(root: fake.root))
        // A domain whose counter cannot be read (no energy_uj, as when only root may read it).
        try fake.domain("intel-rapl:0", name: "package-0", energy: nil)
        XCTAssertNil(RAPLMeter(root: fake.root))
        // A counter that disappears mid-window: the window measures nothing rather than zero.
        try fake.set("intel-rapl:0", 1_000_000)
        let meter = try XCTUnwrap(RAPLMeter(root: fake.root))
        let window = try XCTUnwrap(meter.start(sampling: nil))
        try FileManager.default.removeItem(at: fake.root.appendingPathComponent("intel-rapl:0/energy_uj"))
        XCTAssertNil(meter.cumulativeJoules())
        XCTAssertNil(window.stop())
        XCTAssertNil(meter.start(sampling: nil))
    }

    func testBackgroundSamplingFillsTheTimeline() throws {
        let fake = FakePowercap()
        try fake.domain("intel-rapl:0", name: "package-0", energy: 0)
        let meter = try XCTUnwrap(RAPLMeter(root: fake.root))
        let window = try XCTUnwrap(meter.start(sampling: .milliseconds(20)))
        for step in 1...5 {
            Thread.sleep(forTimeInterval: 0.03)
            try fake.set("intel-rapl:0", UInt64(step) * 1_000_000)
        }
        let measured = try XCTUnwrap(window.stop())
        XCTAssertEqual(measured.joules, 5, accuracy: 1e-9)
        XCTAssertGreaterThanOrEqual(measured.timeline.count, 3)
    }

    func testThisMachineReportsNilOrARealReading() {
        // Whatever the host: never a fabricated zero.
        if let meter = RAPLMeter() { XCTAssertNotNil(meter.cumulativeJoules()) }
    }
}
