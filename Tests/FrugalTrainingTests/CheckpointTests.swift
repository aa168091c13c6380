// CheckpointTests: a run stopped, saved, restored into a fresh trainer and continued ends
// bit-identical to a run that never stopped; damaged or foreign checkpoints are refused by name;
// `latest` names the newest and older checkpoints stay whole.

import Foundation
import FrugalCore
import FrugalCPU
@testable import FrugalModels
@testable import FrugalTraining
import XCTest

final class CheckpointTests: XCTestCase {
    /// A fresh folder under the temporary directory, removed after the test.
    private func temporaryFolder() -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("frugal-checkpoint-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    // MARK: - Resume exactness

    /// `total` steps straight against `split` steps, save, a fresh decoder and trainer built the
    /// same way, restore, and the remaining steps: every trainable value, optimizer tensor,
    /// loss and piece of scalar state must be bit-identical.
    private func checkResume(_ configuration: TrainingConfiguration, family: String = "llama3", split: Int,
                             file: StaticString = #filePath, line: UInt = #line) throws {
        let sequences = TinyTraining.sequences(8, lengths: 5...14, seed: 11)
        let make = { try TinyTraining.trainer(configuration, sequences, family: family, shuffle: true) }
        let straight = try make()
        var straightLosses = [Double]()
        while !straight.isFinished { straightLosses.append(try TinyTraining.step(straight, file: file, line: line).loss) }

        let first = try make()
        for _ in 0..<split { _ = try TinyTraining.step(first, file: file, line: line) }
        let folder = try Checkpoint.save(first, in: temporaryFolder())
        XCTAssertEqual(folder.lastPathComponent, String(format: "step-%06d", split), file: file, line: line)

        let resumed = try make()
        XCTAssertNotEqual(TinyTraining.optimizerState(resumed), TinyTraining.optimizerState(first),
                          "a fresh trainer should differ from the saved one before restoring", file: file, line: line)
        try Checkpoint.restore(resumed, from: folder)
        XCTAssertEqual(resumed.step, split, file: file, line: line)
        XCTAssertEqual(resumed.loader.state, first.loader.state, file: file, line: line)
        XCTAssertEqual(TinyTraining.optimizerState(resumed), TinyTraining.optimizerState(first), file: file, line: line)
        var resumedLosses = [Double]()
        while !resumed.isFinished { resumedLosses.append(try TinyTraining.step(resumed, file: file, line: line).loss) }

        XCTAssertEqual(resumedLosses, Array(straightLosses.dropFirst(split)), "losses after resuming", file: file, line: line)
        XCTAssertEqual(resumed.step, straight.step, file: file, line: line)
        XCTAssertEqual(resumed.optimizer.updates, straight.optimizer.updates, file: file, line: line)
        XCTAssertEqual(resumed.random, straight.random, "dropout stream", file: file, line: line)
        XCTAssertEqual(resumed.loader.state, straight.loader.state, "data position", file: file, line: line)
        XCTAssertEqual(resumed.scaler, straight.scaler, "loss scaler", file: file, line: line)
        TinyTraining.assertClose(TinyTraining.values(resumed), TinyTraining.values(straight), tolerance: 0, straight,
                                 "trainable values", file: file, line: line)
        let expected = TinyTraining.optimizerState(straight), found = TinyTraining.optimizerState(resumed)
        XCTAssertEqual(Set(found.keys), Set(expected.keys), file: file, line: line)
        for (name, values) in expected.sorted(by: { $0.key < $1.key }) {
            XCTAssertTrue(found[name] == values, "optimizer tensor '\(name)' differs", file: file, line: line)
        }
    }

    /// LoRA with dropout 0.1 (the dropout stream matters) over a shuffled loader of 4
    /// micro-batches per epoch (the save falls mid-epoch, so the data cursor matters).
    func testResumeIsExactForLoRAWithDropoutAndShuffling() throws {
        var c = TinyTraining.configuration(.lora(LoRAConfiguration(rank: 4, alpha: 8, dropout: 0.1, targets: ["all-linear"])),
                                           steps: 10, microBatch: 2)
        c.schedule = .cosine
        c.warmupSteps = 2
        c.maxGradientNorm = 1
        c.weightDecay = 0.01
        try checkResume(c, split: 5)
    }

    /// A full fine-tune of every weight, with gradient accumulation.
    func testResumeIsExactForAFullFineTune() throws {
        var c = TinyTraining.configuration(.full, steps: 4, microBatch: 2)
        c.gradientAccumulation = 2
        c.learningRate = 1e-3
        c.schedule = .linear
        c.maxGradientNorm = 1
        try checkResume(c, split: 3)
    }

    /// Under bf16 the f32 masters are saved and restored; under fp16 the loss scale and its
    /// count of clean steps too (the scale grows every 2 clean steps, so a scaler restored at
    /// its initial state would differ).
    func testResumeIsExactWithMastersAndLossScaling() throws {
        var c = TinyTraining.configuration(steps: 6, microBatch: 2)
        c.precision = .bf16
        try checkResume(c, split: 3)
        c.precision = .fp16
        c.lossScale.initialScale = 256
        c.lossScale.growthInterval = 2
        try checkResume(c, split: 3)
    }

    /// A full fine-tune under `precision` with gradient accumulation and weight decay, resumed
    /// after step 2 of 4.
    private func checkFullResumeWithAccumulation(_ precision: PrecisionPolicy) throws {
        var c = TinyTraining.configuration(.full, steps: 4, microBatch: 2)
        c.precision = precision
        c.gradientAccumulation = 2
        c.learningRate = 1e-3
        c.weightDecay = 0.01
        try checkResume(c, split: 2)
    }

    /// Under pure bf16 the weights are bf16 tensors, saved in bf16 and restored byte for byte: a
    /// full fine-tune with gradient accumulation, and LoRA with the optimizer offloaded (its f32
    /// copies on the host) and the fused step.
    func testResumeIsExactUnderPureBF16() throws {
        try checkFullResumeWithAccumulation(.pureBF16)
        var c = TinyTraining.configuration(steps: 6, microBatch: 2)
        c.precision = .pureBF16
        c.offloadOptimizer = true
        c.fusedOptimizerStep = true
        try checkResume(c, split: 3)
    }

    /// Under fp16 and bf16 the weights are 16-bit compute copies of the f32 masters, saved in
    /// their dtype and restored byte for byte with the masters: a bf16 full fine-tune with
    /// gradient accumulation, fp16 LoRA with loss scaling and the optimizer offloaded, and bf16
    /// LoRA with the fused step.
    func testResumeIsExactWith16BitComputeCopies() throws {
        try checkFullResumeWithAccumulation(.bf16)
        var c = TinyTraining.configuration(steps: 6, microBatch: 2)
        c.precision = .fp16
        c.offloadOptimizer = true
        try checkResume(c, split: 3)
        c = TinyTraining.configuration(.full, steps: 4, microBatch: 2)
        c.precision = .fp16
        c.learningRate = 1e-3
        try checkResume(c, split: 2)
        c = TinyTraining.configuration(steps: 6, microBatch: 2)
        c.precision = .bf16
        c.fusedOptimizerStep = true
        try checkResume(c, split: 3)
    }

    /// 8-bit AdamW's packed moments are saved byte for byte: a full fine-tune (norm vectors pad to
    /// a block) with bf16 masters and weight decay, and LoRA with dropout over shuffled data.
    func testResumeIsExactWithAdamW8bit() throws {
        var c = TinyTraining.configuration(.full, steps: 5, microBatch: 2)
        c.optimizer = .adamW8bit
        c.precision = .bf16
        c.learningRate = 1e-3
        c.weightDecay = 0.01
        try checkResume(c, split: 2)
        c = TinyTraining.configuration(.lora(LoRAConfiguration(rank: 4, alpha: 8, dropout: 0.1, targets: ["all-linear"])),
                                       steps: 8, microBatch: 2)
        c.optimizer = .adamW8bit
        try checkResume(c, split: 5)
    }

    // MARK: - Integrity

    /// A trainer of one step and its checkpoint.
    private func savedCheckpoint() throws -> (trainer: Trainer, folder: URL) {
        let trainer = try TinyTraining.trainer(TinyTraining.configuration(steps: 4), TinyTraining.sequences(4, lengths: 6...10))
        _ = try TinyTraining.step(trainer)
        return (trainer, try Checkpoint.save(trainer, in: temporaryFolder()))
    }

    /// Asserts that restoring `folder` into a fresh trainer fails with `malformedFile` naming
    /// `fileName` in the folder, and leaves the trainer as it was.
    private func assertRestoreFails(_ folder: URL, naming fileName: String, rank: Int = 4,
                                    file: StaticString = #filePath, line: UInt = #line) throws {
        var c = TinyTraining.configuration(steps: 4)
        c.method = .lora(LoRAConfiguration(rank: rank, alpha: 8, dropout: 0, targets: ["all-linear"]))
        let fresh = try TinyTraining.trainer(c, TinyTraining.sequences(4, lengths: 6...10))
        let before = TinyTraining.optimizerState(fresh)
        XCTAssertThrowsError(try Checkpoint.restore(fresh, from: folder), file: file, line: line) { error in
            guard case let FrugalError.malformedFile(path, problem, _) = error else {
                return XCTFail("expected malformedFile, got \(error)", file: file, line: line)
            }
            XCTAssertEqual(path, folder.appendingPathComponent(fileName).path, "(\(problem))", file: file, line: line)
        }
        XCTAssertEqual(fresh.step, 0, file: file, line: line)
        if rank == 4 {
            XCTAssertEqual(TinyTraining.optimizerState(fresh), before, "a refused checkpoint changed the trainer",
                           file: file, line: line)
        }
    }

    func testCheckpointWithAMissingFileIsRejected() throws {
        for missing in ["state.json", "tensors.safetensors", "manifest.json"] {
            let (_, folder) = try savedCheckpoint()
            try FileManager.default.removeItem(at: folder.appendingPathComponent(missing))
            try assertRestoreFails(folder, naming: missing)
        }
    }

    /// One byte changed in the tensor data (the size unchanged) is caught by the manifest's hash.
    func testCheckpointWithAnAlteredTensorIsRejected() throws {
        let (_, folder) = try savedCheckpoint()
        let url = folder.appendingPathComponent("tensors.safetensors")
        var bytes = try Data(contentsOf: url)
        bytes[bytes.count - 3] ^= 0x01
        try bytes.write(to: url)
        try assertRestoreFails(folder, naming: "tensors.safetensors")
    }

    func testCheckpointWithAnAlteredStateIsRejected() throws {
        let (_, folder) = try savedCheckpoint()
        let url = folder.appendingPathComponent("state.json")
        let text = try String(contentsOf: url, encoding: .utf8)
        let altered = text.replacingOccurrences(of: "\"step\" : 1", with: "\"step\" : 2")
        XCTAssertNotEqual(altered, text)
        try Data(altered.utf8).write(to: url)
        try assertRestoreFails(folder, naming: "state.json")
    }

    /// A checkpoint of adapters of another rank does not fit the trainer.
    func testCheckpointOfAnotherRunIsRejected() throws {
        let (_, folder) = try savedCheckpoint()
        try assertRestoreFails(folder, naming: "tensors.safetensors", rank: 2)
    }

    /// A checkpoint of f32 AdamW does not fit a trainer with 8-bit moments (its moments are F32
    /// tensors, not packed buffers), and the trainer is left as it was.
    func testCheckpointOfAnotherOptimizerIsRejected() throws {
        let (_, folder) = try savedCheckpoint()
        var c = TinyTraining.configuration(steps: 4)
        c.optimizer = .adamW8bit
        let fresh = try TinyTraining.trainer(c, TinyTraining.sequences(4, lengths: 6...10))
        let before = TinyTraining.optimizerState(fresh)
        XCTAssertThrowsError(try Checkpoint.restore(fresh, from: folder)) { error in
            guard case let FrugalError.malformedFile(path, _, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(path, folder.appendingPathComponent("tensors.safetensors").path)
        }
        XCTAssertEqual(TinyTraining.optimizerState(fresh), before)
    }

    /// After two saves `latest` names the second; the first is byte-for-byte as it was and
    /// still restores; no temporary folder is left behind.
    func testLatestNamesTheNewestAndOlderCheckpointsStayIntact() throws {
        let directory = temporaryFolder()
        XCTAssertNil(Checkpoint.latest(in: directory))
        let trainer = try TinyTraining.trainer(TinyTraining.configuration(steps: 4), TinyTraining.sequences(4, lengths: 6...10))
        _ = try TinyTraining.step(trainer)
        let older = try Checkpoint.save(trainer, in: directory)
        XCTAssertEqual(Checkpoint.latest(in: directory)?.standardizedFileURL.path, older.standardizedFileURL.path)
        let files = ["manifest.json", "state.json", "tensors.safetensors"]
        let olderBytes = try files.map { try Data(contentsOf: older.appendingPathComponent($0)) }
        let olderState = TinyTraining.optimizerState(trainer)

        _ = try TinyTraining.step(trainer)
        let newer = try Checkpoint.save(trainer, in: directory)
        XCTAssertNotEqual(newer.lastPathComponent, older.lastPathComponent)
        XCTAssertEqual(Checkpoint.latest(in: directory)?.standardizedFileURL.path, newer.standardizedFileURL.path)
        XCTAssertEqual(try files.map { try Data(contentsOf: older.appendingPathComponent($0)) }, olderBytes)
        let entries = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        XCTAssertEqual(entries, ["latest", "step-000001", "step-000002"])

        let restored = try TinyTraining.trainer(TinyTraining.configuration(steps: 4), TinyTraining.sequences(4, lengths: 6...10))
        try Checkpoint.restore(restored, from: older)
        XCTAssertEqual(restored.step, 1)
        XCTAssertEqual(TinyTraining.optimizerState(restored), olderState)
    }
}
