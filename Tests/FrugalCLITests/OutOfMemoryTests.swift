// End-to-end: a run that does not fit its memory stops with one line saying what was asked, what
// was free, what Frugal held by category and what `frugal plan` suggests; `--auto-batch` makes the
// same run fit by accumulating smaller micro-batches, with the same loss as choosing them by hand.
import Foundation
import XCTest

final class OutOfMemoryTests: XCTestCase {
    /// The default model `scripts/setup` puts in the cache (SmolLM2-135M, 92 MiB as loaded).
    static let modelPath: String = {
        let cache = ProcessInfo.processInfo.environment["FRUGAL_CACHE"] ?? (NSHomeDirectory() + "/.cache/frugal")
        return cache + "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    }()

    /// A new scratch folder holding `records` as Alpaca-style `data.json`, for a run of the default
    /// model (the test is skipped when `scripts/setup` has not fetched it).
    static func scratchWithData(_ name: String, _ records: [[String: String]]) throws -> URL {
        try XCTSkipUnless(FileManager.default.fileExists(atPath: modelPath), "run scripts/setup to fetch SmolLM2")
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("frugal-\(name)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        try JSONSerialization.data(withJSONObject: records).write(to: scratch.appendingPathComponent("data.json"))
        return scratch
    }

    private var scratch: URL!

    override func setUpWithError() throws {
        // Eight records of about 50 tokens each.
        scratch = try Self.scratchWithData("oom", (0..<8).map { i in
            ["instruction": "Write a short sentence about the number \(i) and the sky on a clear summer afternoon in the mountains.",
             "input": "", "output": "The number \(i) is written under a sky that is bright blue on a clear summer afternoon high up."]
        })
    }

    override func tearDownWithError() throws { if let scratch { try? FileManager.default.removeItem(at: scratch) } }

    /// Runs `frugal train` on the CPU for one step of the eight records under a 200 MiB budget.
    private func train(_ extra: [String], result: String) throws -> (status: Int32, stderr: String) {
        let run = try BadInputTests.frugal(["train", "--device", "cpu", "--data", scratch.appendingPathComponent("data.json").path,
                                            "--steps", "1", "--max-length", "64", "--memory-limit", "200MiB",
                                            "--output", scratch.appendingPathComponent(result).path,
                                            "--result", scratch.appendingPathComponent(result + ".json").path] + extra)
        return (run.status, run.stderr)
    }

    private func result(_ name: String) throws -> [String: Any] {
        let data = try Data(contentsOf: scratch.appendingPathComponent(name + ".json"))
        return try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    func testTooBigARunStopsWithTheFiguresAndASuggestionThenAutoBatchFits() throws {
        // Eight sequences at once need ~280 MiB: out of memory, said in one line.
        let failed = try train(["--batch", "8"], result: "oom")
        XCTAssertEqual(failed.status, 1, failed.stderr)
        let lines = failed.stderr.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, failed.stderr)
        for fragment in ["out of host memory", "asked", "for activations", "free of the --memory-limit of 200.00 MiB",
                         "weights 92.10 MiB", "`frugal plan` suggests: --batch", "--grad-accum"] {
            XCTAssertTrue(failed.stderr.contains(fragment), "'\(fragment)' not in: \(failed.stderr)")
        }

        // --auto-batch: smaller micro-batches, the same eight sequences per step, under the budget.
        let fitted = try train(["--batch", "8", "--auto-batch"], result: "auto")
        XCTAssertEqual(fitted.status, 0, fitted.stderr)
        let auto = try result("auto")
        let settings = try XCTUnwrap(auto["settings"] as? [String: String])
        let batch = try XCTUnwrap(Int(settings["batch"] ?? "")), accumulation = try XCTUnwrap(Int(settings["grad_accum"] ?? ""))
        XCTAssertLessThan(batch, 8)
        XCTAssertEqual(batch * accumulation, 8)
        let peak = try XCTUnwrap(auto["peakBytes"] as? Int)
        XCTAssertLessThanOrEqual(peak, 200 << 20)
        // The run records the plan's prediction beside its measured peak; within 10% of it.
        let predicted = try XCTUnwrap(auto["predictedPeakBytes"] as? Int)
        XCTAssertEqual(Double(predicted), Double(peak), accuracy: 0.1 * Double(peak))

        // The same micro-batches chosen by hand give the same step.
        let byHand = try train(["--batch", "\(batch)", "--grad-accum", "\(accumulation)"], result: "hand")
        XCTAssertEqual(byHand.status, 0, byHand.stderr)
        XCTAssertEqual(auto["lossLast"] as? Double, try result("hand")["lossLast"] as? Double)
    }
}
