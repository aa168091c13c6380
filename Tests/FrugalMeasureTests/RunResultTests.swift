// RunResult round-trips through JSON with its memory figures.
import Foundation
import XCTest
import FrugalCore
@testable import FrugalMeasure

final class RunResultTests: XCTestCase {
    func testRecordsMemoryAndRoundTrips() throws {
        var result = RunResult(name: "lora-bf16", device: "CPU", command: "frugal train", settings: ["precision": "bf16"])
        var memory = MemorySnapshot()
        memory.peak[.weights] = 100
        memory.peak[.activations] = 50
        memory.peakTotal = 140
        result.record(memory: memory)
        XCTAssertEqual(result.peakByCategory?["activations"], 50)
        XCTAssertGreaterThan(result.peakResidentBytes ?? 0, 1 << 20)
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("result-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: url) }
        try result.write(to: url)
        let read = try JSONDecoder().decode(RunResult.self, from: Data(contentsOf: url))
        XCTAssertEqual(read.peakBytes, 140)
        XCTAssertEqual(read.settings["precision"], "bf16")
        XCTAssertNil(read.energyJoules)
    }

    /// Host memory (what was offloaded) reaches the file beside the device's; nothing offloaded, no field.
    func testRecordsOffloadedHostMemory() throws {
        var result = RunResult(name: "offload", device: "CPU", command: "frugal train", settings: [:])
        var memory = MemorySnapshot(), host = MemorySnapshot()
        memory.peak[.trainable] = 100
        memory.peakTotal = 100
        result.record(memory: memory)
        XCTAssertNil(result.hostPeakByCategory)
        host.peak[.optimizer] = 800
        host.peakTotal = 800
        result.record(memory: memory, host: host)
        let read = try JSONDecoder().decode(RunResult.self, from: JSONEncoder().encode(result))
        XCTAssertEqual(read.hostPeakByCategory, ["optimizer": 800])
        XCTAssertEqual(read.peakByCategory?["trainable"], 100)
    }

    /// A meter that counts 10 J per reading.
    private final class CountingMeter: EnergyMeter, @unchecked Sendable {
        let name = "counting"
        private var joules = 0.0
        func cumulativeJoules() -> Double? {
            joules += 10
            return joules
        }
    }

    /// Energy, average power, the power timeline and the phase times reach the JSON file; no
    /// meter means no figures at all, not zeros.
    func testRecordsEnergyTimelineAndPhases() throws {
        let window = try XCTUnwrap(CountingMeter().start(sampling: nil))
        window.sample()
        window.sample()
        var result = RunResult(name: "run", device: "CPU", command: "frugal train", settings: [:])
        result.record(energy: window.stop())
        result.phaseSeconds = ["forward": 1.5, "backward": 3, "optimizer": 0.25]
        let read = try JSONDecoder().decode(RunResult.self, from: JSONEncoder().encode(result))
        XCTAssertEqual(read.energyJoules, 30)
        XCTAssertEqual(read.powerTimeline?.count, 3)
        XCTAssertEqual(read.phaseSeconds?["backward"], 3)
        var none = RunResult(name: "run", device: "CPU", command: "frugal train", settings: [:])
        none.record(energy: nil)
        XCTAssertNil(none.energyJoules)
        XCTAssertNil(none.powerTimeline)
    }
}
