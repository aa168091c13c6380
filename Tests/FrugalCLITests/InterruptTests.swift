// End-to-end: Ctrl-C during `frugal train` finishes the step, writes a checkpoint, says how to
// resume and exits 130; `--resume` then goes on from that step to the end.
import Foundation
import XCTest

final class InterruptTests: XCTestCase {
    private var scratch: URL!

    override func setUpWithError() throws {
        scratch = try OutOfMemoryTests.scratchWithData("interrupt", (0..<16).map { i in
            ["instruction": "Count to \(i % 5 + 3).", "input": "", "output": (1...(i % 5 + 3)).map(String.init).joined(separator: ", ")]
        })
    }

    override func tearDownWithError() throws { if let scratch { try? FileManager.default.removeItem(at: scratch) } }

    private func arguments(steps: Int) -> [String] {
        ["train", "--device", "cpu", "--data", scratch.appendingPathComponent("data.json").path, "--steps", "\(steps)",
         "--batch", "2", "--max-length", "96", "--output", scratch.appendingPathComponent("run").path]
    }

    /// Steps logged so far in the run's metrics.jsonl.
    private func loggedSteps() -> Int {
        let log = scratch.appendingPathComponent("run/metrics.jsonl")
        guard let text = try? String(contentsOf: log, encoding: .utf8) else { return 0 }
        return text.split(separator: "\n").count
    }

    func testCtrlCWritesACheckpointThatResumes() throws {
        let process = Process()
        process.executableURL = BadInputTests.executable
        process.arguments = arguments(steps: 1000)
        let output = scratch.appendingPathComponent("stdout.txt")
        _ = FileManager.default.createFile(atPath: output.path, contents: nil)
        let outputHandle = try FileHandle(forWritingTo: output)
        process.standardOutput = outputHandle
        process.standardError = FileHandle.nullDevice
        try process.run()
        // Interrupt once the first step is logged (or give up after two minutes).
        let deadline = Date().addingTimeInterval(120)
        while loggedSteps() == 0 && process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.2) }
        XCTAssertTrue(process.isRunning, "frugal train ended before it was interrupted")
        process.interrupt()
        // The step under way finishes, then the process must stop (killed after a minute if not).
        let stopBy = Date().addingTimeInterval(60)
        while process.isRunning && Date() < stopBy { Thread.sleep(forTimeInterval: 0.2) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            XCTFail("frugal train went on after Ctrl-C")
        }
        process.waitUntilExit()
        try outputHandle.close()
        let printed = try String(contentsOf: output, encoding: .utf8)
        XCTAssertEqual(process.terminationStatus, 130, printed)
        XCTAssertTrue(printed.contains("interrupted: checkpoint written to"), printed)
        XCTAssertTrue(printed.contains("continue with --resume"), printed)
        let stepsDone = loggedSteps()
        XCTAssertGreaterThan(stepsDone, 0)
        XCTAssertLessThan(stepsDone, 1000)

        // Resumed: from the interrupted step to two steps past it.
        let resumed = try BadInputTests.frugal(arguments(steps: stepsDone + 2) + ["--resume"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertTrue(resumed.stdout.contains("resumed from"), resumed.stdout)
        XCTAssertTrue(resumed.stdout.contains("at step \(stepsDone)"), resumed.stdout)
        XCTAssertEqual(loggedSteps(), stepsDone + 2, "metrics.jsonl goes on from the interrupted step")
    }
}
