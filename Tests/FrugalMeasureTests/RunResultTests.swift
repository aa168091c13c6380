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
}
