// MixedPrecisionStorageTests: under fp16 and bf16 the trainable tensors the model computes with are
// 16-bit compute copies (2 bytes a value) of the optimizer's f32 masters, and runs give bit for bit
// the losses, weights and masters of the old way.
//
// The old way is f32 trainable tensors holding values rounded to the compute dtype after every
// update, which the Trainer keeps when told to store no compute copies: the helper builds it with
// `TinyTraining.trainer(trainableDType: .f32)`, so the same run is made both ways in one test.

import Foundation
import FrugalCore
import FrugalCPU
@testable import FrugalModels
@testable import FrugalTraining
import XCTest

final class MixedPrecisionStorageTests: XCTestCase {
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

    /// The trainable tensors are f16 or bf16 (LoRA's adapters, every weight of a full fine-tune),
    /// the ledger's trainable bytes after set-up are half of an fp32 run's, and the masters f32.
    func testComputeCopiesAre16BitAndHalfTheBytes() throws {
        for precision in [PrecisionPolicy.fp16, .bf16] {
            for method in [lora, .full] {
                let name = "\(precision) \(method)"
                let mixed = try TinyTraining.trainer(configuration(method, precision), sequences)
                let fp32 = try TinyTraining.trainer(configuration(method, .fp32), sequences)
                for p in mixed.parameters.parameters { XCTAssertEqual(p.value.dtype, precision.computeDType, "\(name): \(p.name)") }
                // The decoder computes with the same tensors as the trainable set.
                for (weightName, tensor) in mixed.decoder.weights.namedTensors where tensor.storage.category == .trainable {
                    XCTAssertEqual(tensor.dtype, precision.computeDType, "\(name): \(weightName)")
                }
                _ = try TinyTraining.step(mixed)
                _ = try TinyTraining.step(fp32)
                let mixedBytes = ledger(mixed).snapshot.current[.trainable, default: 0]
                let fp32Bytes = ledger(fp32).snapshot.current[.trainable, default: 0]
                XCTAssertGreaterThan(mixedBytes, 0, name)
                XCTAssertEqual(2 * mixedBytes, fp32Bytes, "\(name): trainable bytes")
                XCTAssertEqual(mixed.parameters.parameters.reduce(0) { $0 + $1.value.byteCount }, mixedBytes, name)
                let masters = mixed.optimizer.stateTensors.filter { $0.0.hasSuffix(".master") }
                XCTAssertEqual(masters.count, mixed.parameters.parameters.count, name)
                XCTAssertTrue(masters.allSatisfy { $0.1.dtype == .f32 }, name)
            }
        }
    }

    /// Several steps of each run with 16-bit compute copies and the old way: every loss, every
    /// weight (the 16-bit copies widened), every master and every optimizer tensor bit-identical.
    func testLossesWeightsAndMastersEqualTheOldWayBitForBit() throws {
        var runs = [(String, TrainingConfiguration)]()
        for precision in [PrecisionPolicy.fp16, .bf16] {
            let p = "\(precision.rawValue)"
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
        runs += [
            ("bf16 LoRA fused step", configuration(lora, .bf16) { $0.fusedOptimizerStep = true }),
            ("bf16 full fused step", configuration(.full, .bf16) { $0.fusedOptimizerStep = true }),
            ("bf16 full offloaded, fused, checkpointing", configuration(.full, .bf16) {
                $0.offloadOptimizer = true; $0.fusedOptimizerStep = true; $0.checkpointing = true
            }),
        ]
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
            XCTAssertEqual(newLosses.map(\.bitPattern), oldLosses.map(\.bitPattern), "\(name): losses \(newLosses) vs \(oldLosses)")
            XCTAssertLessThan(newLosses.last { $0.isFinite }!, newLosses.first!, "\(name): \(newLosses)")
            let newValues = TinyTraining.values(new), oldValues = TinyTraining.values(old)
            for (p, (a, b)) in zip(new.parameters.parameters, zip(newValues, oldValues)) {
                XCTAssertEqual(a.map(\.bitPattern), b.map(\.bitPattern), "\(name): '\(p.name)'")
            }
            let newState = TinyTraining.optimizerState(new), oldState = TinyTraining.optimizerState(old)
            XCTAssertEqual(newState.keys.filter { $0.hasSuffix(".master") }.count, new.parameters.parameters.count, name)
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
