// TrainableStorageTests: the trainable tensors the model computes with are stored in 16 bits —
// bf16 under pure bf16 (updated in place, no masters), f16 or bf16 compute copies of the
// optimizer's f32 masters under fp16 and bf16 — and runs give bit for bit the losses, weights,
// masters and optimizer state of the old way.
//
// The old way is f32 trainable tensors holding values rounded to the compute dtype after every
// update, which the engine keeps for f32 trainable tensors (the Trainer then stores no compute
// copies): `TinyTraining.trainer(trainableDType: .f32)` builds it, so the same run is made both
// ways in one test.

import Foundation
import FrugalCore
import FrugalCPU
@testable import FrugalModels
@testable import FrugalTraining
import XCTest

final class TrainableStorageTests: XCTestCase {
    private let sequences = TinyTraining.sequences(6, lengths: 8...12, seed: 31)
    private let lora = TrainingMethod.lora(LoRAConfiguration(rank: 4, alpha: 8, dropout: 0, targets: ["all-linear"]))

    private func configuration(_ method: TrainingMethod, _ precision: PrecisionPolicy,
                               _ change: (inout TrainingConfiguration) -> Void = { _ in }) -> TrainingConfiguration {
        var c = TinyTraining.configuration(method, steps: 4, microBatch: 2)
        c.precision = precision
        c.learningRate = method == .full ? 1e-3 : 1e-2
        c.weightDecay = 0.01
        change(&c)
        return c
    }

    private func ledger(_ trainer: Trainer) -> MemoryLedger { (trainer.decoder.backend as! CPUBackend).ledger }

    /// The trainable tensors are in the compute dtype (LoRA's adapters, every weight of a full
    /// fine-tune), the decoder computes with them, and the ledger's trainable bytes are half of
    /// an fp32 run's. Pure bf16 creates them in bf16 (its peak is that too) and keeps no masters;
    /// fp16 and bf16 keep an f32 master for each.
    func testTrainableTensorsAre16BitAndHalfTheBytes() throws {
        for precision in [PrecisionPolicy.fp16, .bf16, .pureBF16] {
            for method in [lora, .full] {
                let name = "\(precision) \(method)"
                let trainer = try TinyTraining.trainer(configuration(method, precision), sequences)
                let fp32 = try TinyTraining.trainer(configuration(method, .fp32), sequences)
                for p in trainer.parameters.parameters { XCTAssertEqual(p.value.dtype, precision.computeDType, "\(name): \(p.name)") }
                for p in fp32.parameters.parameters { XCTAssertEqual(p.value.dtype, .f32, "\(name) fp32: \(p.name)") }
                // The decoder computes with the same tensors as the trainable set.
                for (weightName, tensor) in trainer.decoder.weights.namedTensors where tensor.storage.category == .trainable {
                    XCTAssertEqual(tensor.dtype, precision.computeDType, "\(name): \(weightName)")
                }
                _ = try TinyTraining.step(trainer)
                _ = try TinyTraining.step(fp32)
                let bytes = ledger(trainer).snapshot.current[.trainable, default: 0]
                let fp32Bytes = ledger(fp32).snapshot.current[.trainable, default: 0]
                XCTAssertGreaterThan(bytes, 0, name)
                XCTAssertEqual(2 * bytes, fp32Bytes, "\(name): trainable bytes")
                XCTAssertEqual(trainer.parameters.parameters.reduce(0) { $0 + $1.value.byteCount }, bytes, name)
                let masters = trainer.optimizer.stateTensors.filter { $0.0.hasSuffix(".master") }
                if precision.keepsMasters {
                    XCTAssertEqual(masters.count, trainer.parameters.parameters.count, name)
                    XCTAssertTrue(masters.allSatisfy { $0.1.dtype == .f32 }, name)
                } else {
                    XCTAssertEqual(ledger(trainer).snapshot.peak[.trainable, default: 0], bytes, "\(name): created in bf16")
                    XCTAssertTrue(masters.isEmpty, name)
                }
            }
        }
    }

    /// Several steps of each run stored in 16 bits and the old way: every loss, every weight (the
    /// 16-bit tensors widened), every master and every optimizer tensor bit-identical.
    func testRunsEqualTheOldWayBitForBit() throws {
        var runs = [(String, TrainingConfiguration)]()
        for precision in [PrecisionPolicy.fp16, .bf16, .pureBF16] {
            let p = precision.rawValue
            runs += [
                ("\(p) LoRA AdamW", configuration(lora, precision)),
                ("\(p) LoRA optimizer offloaded, 8-bit AdamW", configuration(lora, precision) {
                    $0.offloadOptimizer = true; $0.optimizer = .adamW8bit
                }),
                ("\(p) LoRA SGD, clipping, accumulation", configuration(lora, precision) {
                    $0.optimizer = .sgd; $0.maxGradientNorm = 0.5; $0.gradientAccumulation = 2
                }),
                ("\(p) full AdamW", configuration(.full, precision)),
                ("\(p) full optimizer offloaded", configuration(.full, precision) { $0.offloadOptimizer = true }),
            ]
        }
        // The fused step takes no fp16 loss scaling.
        for precision in [PrecisionPolicy.bf16, .pureBF16] {
            let p = precision.rawValue
            runs += [
                ("\(p) LoRA fused step", configuration(lora, precision) { $0.fusedOptimizerStep = true }),
                ("\(p) full fused step", configuration(.full, precision) { $0.fusedOptimizerStep = true }),
                ("\(p) full offloaded, fused, checkpointing", configuration(.full, precision) {
                    $0.offloadOptimizer = true; $0.fusedOptimizerStep = true; $0.checkpointing = true
                }),
            ]
        }
        for (name, c) in runs {
            let new = try TinyTraining.trainer(c, sequences), old = try TinyTraining.trainer(c, sequences, trainableDType: .f32)
            XCTAssertTrue(new.parameters.parameters.allSatisfy { $0.value.dtype == c.precision.computeDType }, name)
            XCTAssertTrue(old.parameters.parameters.allSatisfy { $0.value.dtype == .f32 }, name)
            // fp16 may skip a step on overflow (a NaN loss here): both ways alike.
            func loss(_ trainer: Trainer) throws -> Double {
                if case let .step(metrics) = try trainer.trainStep() { return metrics.loss }
                return .nan
            }
            var newLosses = [Double](), oldLosses = [Double]()
            while !new.isFinished { newLosses.append(try loss(new)) }
            while !old.isFinished { oldLosses.append(try loss(old)) }
            XCTAssertEqual(newLosses.count, 4, name)
            XCTAssertTrue(newLosses.first!.isFinite, "\(name): \(newLosses)")
            if c.precision != .fp16 { XCTAssertTrue(newLosses.allSatisfy(\.isFinite), "\(name): \(newLosses)") }
            XCTAssertEqual(newLosses.map(\.bitPattern), oldLosses.map(\.bitPattern), "\(name): losses \(newLosses) vs \(oldLosses)")
            XCTAssertLessThan(newLosses.last { $0.isFinite }!, newLosses.first!, "\(name): \(newLosses)")
            let newValues = TinyTraining.values(new), oldValues = TinyTraining.values(old)
            for (p, (a, b)) in zip(new.parameters.parameters, zip(newValues, oldValues)) {
                XCTAssertEqual(a.map(\.bitPattern), b.map(\.bitPattern), "\(name): '\(p.name)'")
            }
            let newState = TinyTraining.optimizerState(new), oldState = TinyTraining.optimizerState(old)
            XCTAssertEqual(newState.keys.filter { $0.hasSuffix(".master") }.count,
                           c.precision.keepsMasters || c.offloadOptimizer ? new.parameters.parameters.count : 0, name)
            XCTAssertEqual(Set(newState.keys), Set(oldState.keys), name)
            for (key, a) in newState {
                XCTAssertEqual(a.map(\.bitPattern), oldState[key]?.map(\.bitPattern), "\(name): '\(key)'")
            }
        }
    }

    /// fp16 loss scaling with 16-bit compute copies: a loss scale that overflows skips steps and
    /// backs off exactly as the old way does, with the same losses and weights after.
    func testFP16LossScalingEqualsTheOldWay() throws {
        let c = configuration(lora, .fp16) { $0.lossScale.initialScale = 16_777_216; $0.steps = 12 }
        let new = try TinyTraining.trainer(c, sequences), old = try TinyTraining.trainer(c, sequences, trainableDType: .f32)
        var newEvents = [String](), oldEvents = [String]()
        while !new.isFinished { newEvents.append("\(try new.trainStep())") }
        while !old.isFinished { oldEvents.append("\(try old.trainStep())") }
        XCTAssertTrue(newEvents.contains { $0.hasPrefix("skippedStep") }, "\(newEvents)")
        XCTAssertEqual(new.scaler.scale, old.scaler.scale)
        for (a, b) in zip(TinyTraining.values(new), TinyTraining.values(old)) { XCTAssertEqual(a.map(\.bitPattern), b.map(\.bitPattern)) }
    }
}
