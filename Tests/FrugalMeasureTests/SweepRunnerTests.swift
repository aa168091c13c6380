// SweepRunner with a stand-in for `frugal train`: results as JSON lines, out-of-memory runs as
// "X" (by message, SIGKILL, or a crash under a memory limit), and resuming skips finished runs.
import Foundation
import XCTest
import FrugalCore
@testable import FrugalMeasure

final class SweepRunnerTests: XCTestCase {
    /// A shell script that stands in for `frugal train`: `--mode` picks how it ends; each call is
    /// logged to calls.log beside it; on success it writes a RunResult to `--result`.
    static let fakeTrain = #"""
    #!/bin/sh
    mode=ok; result=; seconds=2; peak=1048576
    echo "$*" >> "$(dirname "$0")/calls.log"
    while [ $# -gt 0 ]; do
      case "$1" in
        --result) result="$2"; shift 2;;
        --mode) mode="$2"; shift 2;;
        --seconds) seconds="$2"; shift 2;;
        --peak) peak="$2"; shift 2;;
        *) shift;;
      esac
    done
    echo "training (mode $mode)"
    case "$mode" in
      oom-text) echo "Fatal error: out of host memory allocating 999999999 bytes for activations" >&2; exit 1;;
      kill9) kill -9 $$;;
      crash) kill -SEGV $$;;
      fail) echo "error: --method must be lora or full, not 'lorra'" >&2; exit 1;;
      limit) echo "address space limit: $(ulimit -v)";;
    esac
    cat > "$result" <<JSON
    {"name": "train", "date": "2026-01-01T00:00:00Z", "device": "fake CPU", "command": "fake", "settings": {},
     "outOfMemory": false, "seconds": $seconds, "peakBytes": $peak, "lossFirst": 2.5, "lossLast": 2.0}
    JSON
    """#

    private var folder: URL!
    private var executable: URL { folder.appendingPathComponent("fake-train") }
    private var sweepFolder: URL { folder.appendingPathComponent("sweep") }

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("sweep-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try Self.fakeTrain.write(to: executable, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: executable.path)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: folder)
    }

    private func calls() -> [String] {
        let text = (try? String(contentsOf: folder.appendingPathComponent("calls.log"), encoding: .utf8)) ?? ""
        return text.split(separator: "\n").map(String.init)
    }

    private func plan(_ runs: [(String, [String: String])], memoryLimit: Int? = nil, repeats: Int = 1) throws -> SweepPlan {
        var s = SweepSpecification()
        s.runs = runs.map { SweepConfiguration(name: $0.0, options: $0.1) }
        s.memoryLimit = memoryLimit
        s.repeats = repeats
        return try s.plan()
    }

    @discardableResult
    private func sweep(_ plan: SweepPlan) throws -> (Bool, [SweepEvent]) {
        var events = [SweepEvent]()
        let complete = try SweepRunner(plan: plan, directory: sweepFolder, executable: executable).run { events.append($0) }
        return (complete, events)
    }

    func testRunsEachConfigurationAsAProcessAndRecordsJSONLines() throws {
        let plan = try plan([("a", ["seconds": "4", "peak": "2000"]), ("b", ["seconds": "2", "peak": "1000", "checkpointing": "true"])],
                            repeats: 2)
        let (complete, events) = try sweep(plan)
        XCTAssertTrue(complete)
        XCTAssertEqual(calls().count, 4)
        XCTAssertTrue(calls()[1].hasPrefix("train --checkpointing --peak 1000 --seconds 2 --output "), calls()[1])
        XCTAssertEqual(events.filter { if case .finished = $0 { true } else { false } }.count, 4)
        let (records, unreadable) = SweepRunner.readRecords(sweepFolder.appendingPathComponent("results.jsonl"))
        XCTAssertEqual(unreadable, 0)
        XCTAssertEqual(records.map { "\($0.configuration).r\($0.repetition)" }, ["a.r1", "b.r1", "a.r2", "b.r2"])
        XCTAssertEqual(records[1].result.seconds, 2)
        XCTAssertEqual(records[1].result.name, "b")
        XCTAssertEqual(records[1].options["checkpointing"], "true")
        XCTAssertEqual(records[1].termination, "exit 0")
        XCTAssertTrue(FileManager.default.fileExists(atPath: sweepFolder.appendingPathComponent("runs/b.r2.json").path))
        XCTAssertTrue(FileManager.default.fileExists(atPath: sweepFolder.appendingPathComponent("logs/b.r2.log").path))
        XCTAssertEqual(try JSONDecoder().decode(SweepPlan.self, from: Data(contentsOf: sweepFolder.appendingPathComponent("sweep.json"))), plan)
        // A results line is also a plain RunResult.
        let line = try String(contentsOf: sweepFolder.appendingPathComponent("results.jsonl"), encoding: .utf8).split(separator: "\n")[0]
        XCTAssertEqual(try JSONDecoder().decode(RunResult.self, from: Data(line.utf8)).peakBytes, 2000)
    }

    /// Before each run the sweep reads the device memory in use (NVML on a GPU; a stand-in here)
    /// and records it; the report says whether every run started from the baseline.
    func testDeviceMemoryBeforeEachRunIsRecordedAndChecked() throws {
        final class Readings: @unchecked Sendable {
            var values = [1 << 30, (1 << 30) + (100 << 20), 2 << 30]
        }
        let readings = Readings()
        let plan = try plan([("a", [:]), ("b", [:]), ("c", [:])])
        var runner = SweepRunner(plan: plan, directory: sweepFolder, executable: executable)
        runner.deviceMemoryInUse = { readings.values.removeFirst() }
        XCTAssertTrue(try runner.run { _ in })
        let records = SweepRunner.readRecords(sweepFolder.appendingPathComponent("results.jsonl")).records
        XCTAssertEqual(records.map(\.result.deviceMemoryInUseBefore), [1 << 30, (1 << 30) + (100 << 20), 2 << 30])
        let note = try XCTUnwrap(SweepReport(title: "t", records: records, plan: plan).notes.first { $0.contains("baseline") })
        XCTAssertEqual(note, "Device memory was not back to its baseline (1.00 GiB) before: c.r1 (2.00 GiB).")
        XCTAssertTrue(SweepReport.deviceMemoryBaselineNote(Array(records.prefix(2)))!.contains("back to its baseline each time"))
    }

    func testOutOfMemoryRunsAreRecordedAndTheSweepGoesOn() throws {
        let plan = try plan([("text", ["mode": "oom-text"]), ("killed", ["mode": "kill9"]),
                             ("crash-limited", ["mode": "crash", "memory-limit": "8GiB"]),
                             ("crash", ["mode": "crash"]), ("fails", ["mode": "fail"]), ("fine", [:])])
        let (complete, _) = try sweep(plan)
        XCTAssertTrue(complete)
        let records = Dictionary(uniqueKeysWithValues: SweepRunner.readRecords(sweepFolder.appendingPathComponent("results.jsonl"))
            .records.map { ($0.configuration, $0) })
        XCTAssertEqual(records.count, 6)
        for name in ["text", "killed", "crash-limited"] {
            XCTAssertTrue(records[name]!.result.outOfMemory, name)
            XCTAssertNil(records[name]!.result.seconds, name)
            XCTAssertTrue(records[name]!.isComplete, name)
        }
        XCTAssertTrue(records["text"]!.result.error!.contains("out of host memory allocating"))
        XCTAssertEqual(records["killed"]!.termination, "signal 9 (SIGKILL)")
        XCTAssertTrue(records["crash-limited"]!.result.error!.contains("memory limit"))
        for name in ["crash", "fails"] {
            XCTAssertFalse(records[name]!.result.outOfMemory, name)
            XCTAssertFalse(records[name]!.isComplete, name)
        }
        XCTAssertTrue(records["fails"]!.result.error!.contains("must be lora or full"), records["fails"]!.result.error!)
        XCTAssertEqual(records["fine"]!.result.seconds, 2)
    }

    func testTheMemoryLimitReachesTheRunsProcess() throws {
        try sweep(try plan([("limited", ["mode": "limit"])], memoryLimit: 3 << 30))
        let log = try String(contentsOf: sweepFolder.appendingPathComponent("logs/limited.r1.log"), encoding: .utf8)
        XCTAssertTrue(log.contains("address space limit: \(3 << 20)"), log)
    }

    func testAResumedSweepSkipsRunsWhoseResultExists() throws {
        let first = try plan([("a", [:]), ("b", ["mode": "oom-text"]), ("c", ["mode": "fail"])])
        try sweep(first)
        XCTAssertEqual(calls().count, 3)
        // Again: finished and out-of-memory runs are skipped, the failed one runs again.
        let (_, events) = try sweep(first)
        XCTAssertEqual(calls().count, 4)
        XCTAssertTrue(calls()[3].contains("--mode fail"))
        XCTAssertEqual(events.compactMap { if case let .skipped(r) = $0 { r.configuration } else { nil } }, ["a", "b"])
        // A run that finished after the sweep died (result file, no record) is recovered, not rerun.
        var more = first
        more.configurations.append(SweepConfiguration(name: "d", options: [:]))
        try FileManager.default.copyItem(at: sweepFolder.appendingPathComponent("runs/a.r1.json"),
                                         to: sweepFolder.appendingPathComponent("runs/d.r1.json"))
        // A configuration whose options changed runs again.
        more.configurations[0].options["batch"] = "4"
        try sweep(more)
        XCTAssertEqual(calls().count, 6, calls().joined(separator: "\n"))
        XCTAssertTrue(calls()[4].contains("--batch 4"))
        let records = SweepRunner.readRecords(sweepFolder.appendingPathComponent("results.jsonl")).records
        XCTAssertEqual(records.filter { $0.configuration == "d" }.count, 1)
        // A torn last line (the sweep killed mid-write) is skipped, not fatal.
        let handle = try FileHandle(forWritingTo: sweepFolder.appendingPathComponent("results.jsonl"))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(#"{"configuration": "e", "resu"#.utf8))
        try handle.close()
        XCTAssertEqual(SweepRunner.readRecords(sweepFolder.appendingPathComponent("results.jsonl")).unreadable, 1)
    }

    /// A failure recorded before its words counted as out of memory (the H100 factorial's full
    /// fine-tunes, 2026-11-23) reads back as out of memory; other failures stay failures.
    func testRecordedFailuresAreReadAgainstTodaysOutOfMemoryWords() throws {
        func record(_ name: String, error: String) throws -> Data {
            var result = RunResult(name: name, device: "unknown (the run did not finish)", command: "frugal train", settings: [:])
            result.error = error
            let record = SweepRecord(configuration: name, repetition: 1, options: [:], termination: "exit 1", result: result)
            return try JSONEncoder().encode(record) + Data("\n".utf8)
        }
        let file = folder.appendingPathComponent("results.jsonl")
        try (record("full", error: "exit 1: error: out of GPU memory: asked 64.00 MiB for optimizer, 58.19 MiB free of 79.18 GiB.")
             + record("broken", error: "exit 1: error: no such file")).write(to: file)
        let records = SweepRunner.readRecords(file).records
        XCTAssertEqual(records.map(\.result.outOfMemory), [true, false])
        XCTAssertEqual(records[0].result.error, "out of memory: exit 1: error: out of GPU memory: asked 64.00 MiB for optimizer, 58.19 MiB free of 79.18 GiB.")
        XCTAssertEqual(records[1].result.error, "exit 1: error: no such file")
    }

    func testOutOfMemoryClassification() {
        let limit = 1 << 30
        XCTAssertNil(SweepRunner.outOfMemoryReason(.exit(0), log: "out of memory", memoryLimit: limit))
        XCTAssertNotNil(SweepRunner.outOfMemoryReason(.exit(1), log: "CUDA error: out of memory", memoryLimit: nil))
        // Frugal's CUDA allocator's own words (CUDAError.outOfMemory), as the H100 factorial's full cells ended.
        XCTAssertNotNil(SweepRunner.outOfMemoryReason(.exit(1), log: "error: out of GPU memory: asked 64.00 MiB for optimizer, 58.19 MiB free of 79.18 GiB.", memoryLimit: nil))
        XCTAssertNotNil(SweepRunner.outOfMemoryReason(.signal(SIGILL), log: "Fatal error: Could not allocate memory.", memoryLimit: nil))
        XCTAssertNotNil(SweepRunner.outOfMemoryReason(.signal(SIGKILL), log: "", memoryLimit: nil))
        XCTAssertNotNil(SweepRunner.outOfMemoryReason(.signal(SIGILL), log: "", memoryLimit: limit))
        XCTAssertNil(SweepRunner.outOfMemoryReason(.signal(SIGILL), log: "", memoryLimit: nil))
        XCTAssertNil(SweepRunner.outOfMemoryReason(.exit(1), log: "error: no such file", memoryLimit: limit))
    }
}
