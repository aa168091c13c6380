// PhaseTests+Checkpoint: the reward, DPO and PPO trainers stopped, saved, restored into a fresh
// trainer and continued end bit-identical to a run that never stopped (fp32, CPU); a checkpoint
// of another phase, or with an altered tensors file, is refused by name and changes nothing.

import Foundation
import FrugalCore
import FrugalCPU
import FrugalFormats
@testable import FrugalModels
@testable import FrugalTraining
import XCTest

extension PhaseTests {
    /// LoRA with dropout 0.1, so that the dropout stream matters.
    static let droppedLoRA = LoRAConfiguration(rank: 4, alpha: 8, dropout: 0.1, targets: ["all-linear"])

    /// `steps` steps of 2 × 2 pairs with dropout, a cosine schedule after one warm-up step,
    /// clipping and weight decay: every piece of state a resume must carry has a say.
    static func resumeConfiguration(steps: Int, microBatch: Int = 2) -> TrainingConfiguration {
        var c = configuration(steps: steps, microBatch: microBatch)
        c.method = .lora(droppedLoRA)
        c.gradientAccumulation = 2
        c.schedule = .cosine
        c.warmupSteps = 1
        c.maxGradientNorm = 1
        c.weightDecay = 0.01
        return c
    }

    /// A fresh folder under the temporary directory, removed after the test.
    func checkpointFolder() -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("frugal-phase-checkpoint-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    /// Every state tensor of a trainer by name.
    func stateValues<T: Checkpointable>(_ trainer: T) -> [String: [Float]] {
        Dictionary(uniqueKeysWithValues: trainer.checkpointTensors.map { ($0, trainer.backend.download($1)) })
    }

    /// Steps `trainer` until `step` and returns the losses.
    func losses<T: PhaseTrainer>(_ trainer: T, until step: Int, _ trainStep: (T) throws -> PhaseEvent,
                                 file: StaticString = #filePath, line: UInt = #line) throws -> [Double] {
        var losses = [Double]()
        while trainer.step < step {
            guard case let .step(metrics, _) = try trainStep(trainer) else {
                XCTFail("step \(trainer.step) was skipped", file: file, line: line)
                break
            }
            losses.append(metrics.loss)
        }
        return losses
    }

    /// The whole run of `make()`'s trainer straight against `split` steps, save, a fresh trainer
    /// from `make()`, restore, and the remaining steps: the losses, every state tensor and the
    /// scalar state must be bit-identical.
    /// - Returns: the folder of the checkpoint at `split`.
    @discardableResult
    func checkResume<T: PhaseTrainer>(split: Int, _ make: () throws -> T, _ trainStep: (T) throws -> PhaseEvent,
                                      file: StaticString = #filePath, line: UInt = #line) throws -> URL {
        let straight = try make()
        let total = straight.configuration.steps
        let straightLosses = try losses(straight, until: total, trainStep, file: file, line: line)

        let first = try make()
        _ = try losses(first, until: split, trainStep, file: file, line: line)
        let folder = try Checkpoint.save(first, in: checkpointFolder())
        let resumed = try make()
        XCTAssertNotEqual(stateValues(resumed), stateValues(first), "a fresh trainer should differ before restoring",
                          file: file, line: line)
        try Checkpoint.restore(resumed, from: folder)
        XCTAssertEqual(resumed.step, split, file: file, line: line)
        XCTAssertEqual(stateValues(resumed), stateValues(first), file: file, line: line)
        let resumedLosses = try losses(resumed, until: total, trainStep, file: file, line: line)

        XCTAssertEqual(resumedLosses, Array(straightLosses.dropFirst(split)), "losses after resuming", file: file, line: line)
        XCTAssertEqual(resumed.random, straight.random, "random stream", file: file, line: line)
        XCTAssertEqual(resumed.sampler.state, straight.sampler.state, "data position", file: file, line: line)
        XCTAssertEqual(resumed.update.updates, straight.update.updates, file: file, line: line)
        XCTAssertEqual(resumed.update.optimizers.map(\.updates), straight.update.optimizers.map(\.updates), file: file, line: line)
        XCTAssertEqual(resumed.update.scaler, straight.update.scaler, file: file, line: line)
        let expected = stateValues(straight), found = stateValues(resumed)
        XCTAssertEqual(Set(found.keys), Set(expected.keys), file: file, line: line)
        for (name, values) in expected.sorted(by: { $0.key < $1.key }) {
            XCTAssertTrue(found[name] == values, "state tensor '\(name)' differs", file: file, line: line)
        }
        return folder
    }

    /// A reward trainer with dropout on 6 pairs: 4 pairs a step, so the save at step 2 falls
    /// mid-way through the second epoch.
    func rewardTrainer(steps: Int = 4) throws -> RewardModelTrainer {
        let decoder = try decoder()
        let parameters = try decoder.attachLoRA(Self.droppedLoRA, seed: 3)
        let head = ValueHead(backend: decoder.backend as! TrainingBackend, width: decoder.configuration.hiddenSize)
        return try RewardModelTrainer(decoder: decoder, parameters: parameters, head: head,
                                      configuration: Self.resumeConfiguration(steps: steps),
                                      pairs: Self.syntheticPairs(6, seed: 5))
    }

    /// A DPO trainer with dropout on 6 pairs, 4 a step.
    func dpoTrainer(steps: Int = 4) throws -> DPOTrainer {
        let decoder = try decoder()
        let parameters = try decoder.attachLoRA(Self.droppedLoRA, seed: 3)
        return try DPOTrainer(decoder: decoder, parameters: parameters, configuration: Self.resumeConfiguration(steps: steps),
                              pairs: Self.syntheticPairs(6, seed: 6), beta: 0.1)
    }

    func testRewardCheckpointResumesExactly() throws {
        let folder = try checkResume(split: 2, { try rewardTrainer() }) { try $0.trainStep() }
        let names = try SafeTensorsFile(url: folder.appendingPathComponent("tensors.safetensors")).names
        XCTAssertTrue(names.contains("head/v_head.weight.m"), "the head's moments are saved")
    }

    func testDPOCheckpointResumesExactly() throws {
        try checkResume(split: 2, { try dpoTrainer() }) { try $0.trainStep() }
    }

    /// PPO samples its rollouts from the policy: 3 prompts of 5 a step, so the save at step 2
    /// falls in the second epoch, and the rollouts after it depend on the sampling stream.
    func testPPOCheckpointResumesExactly() throws {
        let saved = try savedRewardModel(steps: 2)
        var settings = PPOSettings()
        settings.rollouts = 3
        settings.maxNewTokens = 4
        settings.stopTokens = [2]
        let prompts = Self.syntheticPairs(5, seed: 8).map(\.prompt)
        let folder = try checkResume(split: 2, {
            let decoder = try decoder()
            let (reward, policy) = try SharedBaseRewardModel.load(from: saved.folder, decoder: decoder, policy: Self.lora,
                                                                  seed: 11)
            let critic = ValueHead(backend: decoder.backend as! TrainingBackend, width: decoder.configuration.hiddenSize)
            var c = Self.configuration(steps: 3, microBatch: 2)
            c.schedule = .linear
            return try PPOTrainer(decoder: decoder, parameters: policy, critic: critic, rewardModel: reward,
                                  configuration: c, settings: settings, prompts: prompts)
        }) { try $0.trainStep() }
        let names = try SafeTensorsFile(url: folder.appendingPathComponent("tensors.safetensors")).names
        XCTAssertTrue(names.contains("critic/v_head.weight.m"), "the critic's moments are saved")
    }

    /// Asserts that restoring `folder` into `trainer` fails with `malformedFile` naming
    /// `fileName` in the folder (and its problem containing `problem`), and changes nothing.
    func assertRestoreFails<T: Checkpointable>(_ trainer: T, from folder: URL, naming fileName: String, problem: String = "",
                                               file: StaticString = #filePath, line: UInt = #line) {
        let before = stateValues(trainer), step = trainer.step
        XCTAssertThrowsError(try Checkpoint.restore(trainer, from: folder), file: file, line: line) { error in
            guard case let FrugalError.malformedFile(path, found, _) = error else {
                return XCTFail("expected malformedFile, got \(error)", file: file, line: line)
            }
            XCTAssertEqual(path, folder.appendingPathComponent(fileName).path, found, file: file, line: line)
            XCTAssertTrue(found.contains(problem), found, file: file, line: line)
        }
        XCTAssertEqual(trainer.step, step, file: file, line: line)
        XCTAssertEqual(stateValues(trainer), before, "a refused checkpoint changed the trainer", file: file, line: line)
    }

    /// A checkpoint of one phase is refused by the trainer of another, SFT's included, by its state.
    func testCheckpointOfAnotherPhaseIsRefused() throws {
        let reward = try rewardTrainer(steps: 1)
        _ = try reward.trainStep()
        let rewardFolder = try Checkpoint.save(reward, in: checkpointFolder())
        assertRestoreFails(try dpoTrainer(), from: rewardFolder, naming: "state.json",
                           problem: "a checkpoint of the reward phase, not of dpo")

        let dpo = try dpoTrainer(steps: 1)
        _ = try dpo.trainStep()
        let dpoFolder = try Checkpoint.save(dpo, in: checkpointFolder())
        assertRestoreFails(try rewardTrainer(), from: dpoFolder, naming: "state.json",
                           problem: "a checkpoint of the dpo phase, not of reward")
        let sft = try TinyTraining.trainer(TinyTraining.configuration(steps: 1), TinyTraining.sequences(4, lengths: 6...10))
        assertRestoreFails(sft, from: dpoFolder, naming: "state.json", problem: "a checkpoint of the dpo phase, not of sft")

        _ = try TinyTraining.step(sft)
        let sftFolder = try Checkpoint.save(sft, in: checkpointFolder())
        assertRestoreFails(try dpoTrainer(), from: sftFolder, naming: "state.json", problem: "a checkpoint of the sft phase, not of dpo")
    }

    /// One byte changed in a phase checkpoint's tensor data is caught by the manifest's hash.
    func testPhaseCheckpointWithAnAlteredTensorIsRejected() throws {
        let trainer = try dpoTrainer(steps: 1)
        _ = try trainer.trainStep()
        let folder = try Checkpoint.save(trainer, in: checkpointFolder())
        let url = folder.appendingPathComponent("tensors.safetensors")
        var bytes = try Data(contentsOf: url)
        bytes[bytes.count - 3] ^= 0x01
        try bytes.write(to: url)
        assertRestoreFails(try dpoTrainer(), from: folder, naming: "tensors.safetensors", problem: "altered")
    }
}
