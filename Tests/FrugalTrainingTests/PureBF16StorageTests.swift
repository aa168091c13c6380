// PureBF16StorageTests: under pure bf16 the trainable tensors are stored in bf16 (2 bytes a
// value), and runs give bit for bit the losses and weights of the old way.
//
// The old way is the engine's former pure-bf16 path, which it keeps for f32 trainable tensors: f32
// tensors holding bf16 values, rounded to bf16 (`roundInPlace`) after every update. The helper
// builds it by storing the trainable tensors in f32 (`TinyTraining.trainer(trainableDType: .f32)`),
// so the same run is made both ways in one test.

import Foundation
import FrugalCore
import FrugalCPU
@testable import FrugalModels
@testable import FrugalTraining
import XCTest

final class PureBF16StorageTests: XCTestCase {
    private let sequences = TinyTraining.sequences(6, lengths: 8...12, seed: 31)
    private let lora = TrainingMethod.lora(LoRAConfiguration(rank: 4, alpha: 8, dropout: 0, targets: ["all-linear"]))

    private func configuration(_ method: TrainingMethod, _ change: (inout TrainingConfiguration) -> Void = { _ in })
        -> TrainingConfiguration {
        var c = TinyTraining.configuration(method, steps: 4, microBatch: 2)
        c.precision = .pureBF16
        c.learningRate = method == .full ? 1e-3 : 1e-2
        c.weightDecay = 0.01
        change(&c)
        return c
    }

    private func ledger(_ trainer: Trainer) -> MemoryLedger { (trainer.decoder.backend as! CPUBackend).ledger }

    /// The trainable tensors are bf16 (LoRA's adapters, every weight of a full fine-tune), and
    /// the ledger's trainable bytes are half of an fp32 run's.
    func testTrainableTensorsAreBF16AndHalfTheBytes() throws {
        for method in [lora, .full] {
            let pure = try TinyTraining.trainer(configuration(method), sequences)
            var c = configuration(method)
            c.precision = .fp32
            let fp32 = try TinyTraining.trainer(c, sequences)
            for p in pure.parameters.parameters { XCTAssertEqual(p.value.dtype, .bf16, "\(p.name)") }
            for p in fp32.parameters.parameters { XCTAssertEqual(p.value.dtype, .f32, "\(p.name)") }
            _ = try TinyTraining.step(pure)
            _ = try TinyTraining.step(fp32)
            let pureBytes = ledger(pure).snapshot.peak[.trainable, default: 0]
            let fp32Bytes = ledger(fp32).snapshot.peak[.trainable, default: 0]
            XCTAssertGreaterThan(pureBytes, 0)
            XCTAssertEqual(2 * pureBytes, fp32Bytes, "\(method): trainable bytes")
            XCTAssertEqual(pure.parameters.parameters.reduce(0) { $0 + $1.value.byteCount }, pureBytes)
            XCTAssertFalse(TinyTraining.optimizerState(pure).keys.contains { $0.hasSuffix(".master") })
        }
    }

    /// Several steps of each run stored in bf16 and the old way: every loss, every weight and
    /// every optimizer tensor bit-identical.
    func testLossesAndWeightsEqualTheOldWayBitForBit() throws {
        let runs: [(String, TrainingConfiguration)] = [
            ("LoRA AdamW", configuration(lora)),
            ("LoRA fused step", configuration(lora) { $0.fusedOptimizerStep = true }),
            ("LoRA optimizer offloaded, 8-bit AdamW", configuration(lora) { $0.offloadOptimizer = true; $0.optimizer = .adamW8bit }),
            ("LoRA SGD, clipping, accumulation", configuration(lora) {
                $0.optimizer = .sgd; $0.maxGradientNorm = 0.5; $0.gradientAccumulation = 2
            }),
            ("full AdamW", configuration(.full)),
            ("full fused step", configuration(.full) { $0.fusedOptimizerStep = true }),
            ("full optimizer offloaded", configuration(.full) { $0.offloadOptimizer = true }),
            ("full offloaded, fused, checkpointing", configuration(.full) {
                $0.offloadOptimizer = true; $0.fusedOptimizerStep = true; $0.checkpointing = true
            }),
        ]
        for (name, c) in runs {
            let new = try TinyTraining.trainer(c, sequences), old = try TinyTraining.trainer(c, sequences, trainableDType: .f32)
            XCTAssertTrue(new.parameters.parameters.allSatisfy { $0.value.dtype == .bf16 }, name)
            XCTAssertTrue(old.parameters.parameters.allSatisfy { $0.value.dtype == .f32 }, name)
            var newLosses = [Double](), oldLosses = [Double]()
            while !new.isFinished { newLosses.append(try TinyTraining.step(new).loss) }
            while !old.isFinished { oldLosses.append(try TinyTraining.step(old).loss) }
            XCTAssertEqual(newLosses.count, 4, name)
            XCTAssertEqual(newLosses.map(\.bitPattern), oldLosses.map(\.bitPattern), "\(name): losses \(newLosses) vs \(oldLosses)")
            XCTAssertLessThan(newLosses.last!, newLosses.first!, "\(name): \(newLosses)")
            let newValues = TinyTraining.values(new), oldValues = TinyTraining.values(old)
            for (p, (a, b)) in zip(new.parameters.parameters, zip(newValues, oldValues)) {
                XCTAssertEqual(a.map(\.bitPattern), b.map(\.bitPattern), "\(name): '\(p.name)'")
            }
            XCTAssertEqual(TinyTraining.optimizerState(new), TinyTraining.optimizerState(old), "\(name): optimizer state")
        }
    }
}
