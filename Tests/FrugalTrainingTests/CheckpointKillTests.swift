// CheckpointKillTests: a training process killed with SIGKILL at random moments while it saves
// checkpoints, 200 times over one output folder. After every kill, `latest` names a checkpoint
// that restores, the one before it restores too, and the next process resumes from `latest`;
// at the end every checkpoint folder left restores.
//
// The child is this test binary itself, run with one test selected and FRUGAL_CHECKPOINT_CHILD
// naming the folder: it resumes from the folder's latest checkpoint, then trains and saves a
// checkpoint after every step until it is killed.

import Foundation
import FrugalCore
@testable import FrugalTraining
import XCTest

final class CheckpointKillTests: XCTestCase {
    static let childVariable = "FRUGAL_CHECKPOINT_CHILD"
    static let trials = 200

    private static func makeTrainer() throws -> Trainer {
        try TinyTraining.trainer(TinyTraining.configuration(steps: 1_000_000), TinyTraining.sequences(6, lengths: 6...12),
                                 shuffle: true)
    }

    /// The child's work; skipped unless the parent started this process.
    func testChildSavesCheckpointsUntilKilled() throws {
        guard let path = ProcessInfo.processInfo.environment[Self.childVariable] else {
            throw XCTSkip("runs only as the child of testSIGKILLDuringSavesLeavesEveryCheckpointWhole")
        }
        let directory = URL(fileURLWithPath: path)
        let trainer = try Self.makeTrainer()
        if let latest = Checkpoint.latest(in: directory) { try Checkpoint.restore(trainer, from: latest) }
        while true {
            _ = try TinyTraining.step(trainer)
            try Checkpoint.save(trainer, in: directory)
        }
    }

    func testSIGKILLDuringSavesLeavesEveryCheckpointWhole() throws {
        guard ProcessInfo.processInfo.environment[Self.childVariable] == nil else { return }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("frugal-kill-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: directory) }
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var random = SystemRandomNumberGenerator()
        var lastStep = 0, killedMidSave = 0
        for trial in 0..<Self.trials {
            let child = Process()
            child.executableURL = executable
            child.arguments = ["FrugalTrainingTests.CheckpointKillTests/testChildSavesCheckpointsUntilKilled"]
            child.environment = ProcessInfo.processInfo.environment.merging([Self.childVariable: directory.path]) { $1 }
            child.standardOutput = FileHandle.nullDevice
            child.standardError = FileHandle.nullDevice
            try child.run()
            // Wait for this child's first new checkpoint, then kill it at a random moment of its saves.
            let deadline = Date().addingTimeInterval(60)
            while step(of: Checkpoint.latest(in: directory)) <= lastStep, child.isRunning, Date() < deadline {
                usleep(2_000)
            }
            XCTAssertTrue(child.isRunning, "trial \(trial): the child stopped before it was killed")
            usleep(UInt32.random(in: 0...40_000, using: &random))
            kill(child.processIdentifier, SIGKILL)
            child.waitUntilExit()
            XCTAssertEqual(child.terminationReason, .uncaughtSignal, "trial \(trial)")
            let entries = try FileManager.default.contentsOfDirectory(atPath: directory.path)
            if entries.contains(where: { $0.hasPrefix(".tmp-") && $0.hasSuffix("-\(child.processIdentifier)") }) { killedMidSave += 1 }

            let latest = try XCTUnwrap(Checkpoint.latest(in: directory), "trial \(trial): no latest checkpoint")
            let latestStep = step(of: latest)
            // Larger than before: the child resumed from `latest` and went on.
            XCTAssertGreaterThan(latestStep, lastStep, "trial \(trial): the child saved nothing new")
            try Checkpoint.restore(Self.makeTrainer(), from: latest)
            let previous = directory.appendingPathComponent(String(format: "step-%06d", latestStep - 1))
            if FileManager.default.fileExists(atPath: previous.path) { try Checkpoint.restore(Self.makeTrainer(), from: previous) }
            lastStep = latestStep
        }
        // The kills did land inside saves (a save's temporary folder was left behind).
        XCTAssertGreaterThan(killedMidSave, Self.trials / 10, "only \(killedMidSave) of \(Self.trials) kills interrupted a save")
        print("\(Self.trials) SIGKILLs, \(killedMidSave) in the middle of a save; latest always restored")
        // Every checkpoint folder left behind is whole.
        let folders = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasPrefix("step-") }
        XCTAssertGreaterThanOrEqual(folders.count, Self.trials)
        for folder in folders { try Checkpoint.restore(Self.makeTrainer(), from: directory.appendingPathComponent(folder)) }
    }

    /// The step a checkpoint folder is named for (0 for none).
    private func step(of folder: URL?) -> Int {
        folder.flatMap { Int($0.lastPathComponent.dropFirst("step-".count)) } ?? 0
    }
}
