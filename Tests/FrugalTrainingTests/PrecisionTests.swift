// PrecisionTests: the precision policies of a training run: fp16's dynamic loss scaling
// (skip, back off, grow, give up), bf16's f32 masters, pure bf16, and non-finite values
// stopping an fp32 run with the step named.

import Foundation
import FrugalCore
import FrugalCPU
@testable import FrugalModels
@testable import FrugalTraining
import XCTest

final class PrecisionTests: XCTestCase {
    /// Four sequences, one micro-batch per step: every step sees the same batch.
    private let sequences = TinyTraining.sequences(4, lengths: 8...12, seed: 21)

    private func configuration(_ precision: PrecisionPolicy, _ method: TrainingMethod? = nil) -> TrainingConfiguration {
        var c = method.map { TinyTraining.configuration($0, steps: 20, microBatch: 4) }
            ?? TinyTraining.configuration(steps: 20, microBatch: 4)
        c.precision = precision
        return c
    }

    /// Asserts every trainable value is exactly representable in `dtype`.
    private func assertRepresentable(_ trainer: Trainer, in dtype: DType, _ what: String,
                                     file: StaticString = #filePath, line: UInt = #line) {
        for (p, values) in zip(trainer.parameters.parameters, TinyTraining.values(trainer)) {
            let bad = values.firstIndex { HalfPrecision.round($0, to: dtype) != $0 }
            XCTAssertNil(bad, "\(what): '\(p.name)'[\(bad ?? 0)] = \(bad.map { values[$0] } ?? 0) is not a \(dtype) value",
                         file: file, line: line)
        }
    }

    /// Sets one trainable value (the compute copy) and returns what it was.
    @discardableResult
    private func poke(_ trainer: Trainer, _ value: Float, parameter: Int = 0, at index: Int = 0) -> Float {
        let tensor = trainer.parameters.parameters[parameter].value
        if tensor.dtype != .f32 {  // fp16, bf16 and pure bf16 store the weights in 16 bits
            let bits = tensor.rawPointer.assumingMemoryBound(to: UInt16.self), f16 = tensor.dtype == .f16
            defer { bits[index] = f16 ? HalfPrecision.floatToF16(value) : HalfPrecision.floatToBF16(value) }
            return f16 ? HalfPrecision.f16ToFloat(bits[index]) : HalfPrecision.bf16ToFloat(bits[index])
        }
        let values = tensor.floats
        defer { values[index] = value }
        return values[index]
    }

    // MARK: - fp16

    /// A loss scale of 1e30 makes the f16 gradients overflow: each step is skipped without
    /// touching weights or optimizer state and halves the scale; the `maxConsecutiveSkips`-th
    /// skip in a row stops the run with a numerical fault naming the step.
    func testFP16OverflowSkipsTheStepHalvesTheScaleAndFinallyStops() throws {
        var c = configuration(.fp16)
        c.lossScale.initialScale = 1e30
        c.lossScale.growthInterval = 2
        c.lossScale.maxConsecutiveSkips = 3
        let trainer = try TinyTraining.trainer(c, sequences)
        assertRepresentable(trainer, in: .f16, "after set-up")
        // The premise: at this scale the gradients are finite in f32 and only overflow as f16.
        var loader = trainer.loader, random = SplitMix64(seed: 0)
        let b = loader.next().batch
        _ = trainer.decoder.accumulateGradients(
            TrainingBatch(tokens: b.tokens, targets: b.targets, positions: b.positions, segments: b.segments, batch: b.batch),
            into: trainer.parameters, options: PassOptions(gradientScale: 1e30 / Float(b.targetTokenCount)), random: &random)
        let raw = TinyTraining.gradients(trainer)
        XCTAssertTrue(raw.allSatisfy { $0.allSatisfy(\.isFinite) }, "the f32 gradients should be finite")
        XCTAssertGreaterThan(raw.map { $0.map(abs).max() ?? 0 }.max()!, Float(Float16.greatestFiniteMagnitude))
        let state = TinyTraining.optimizerState(trainer)
        XCTAssertTrue(state.keys.contains { $0.hasSuffix(".master") }, "fp16 keeps f32 masters")

        var scale: Float = 1e30
        for step in 1...2 {
            let event = try trainer.trainStep()
            scale *= 0.5
            guard case let .skippedStep(skipped, newScale) = event else { return XCTFail("step \(step): \(event)") }
            XCTAssertEqual(skipped, step)
            XCTAssertEqual(newScale, scale)
            XCTAssertEqual(trainer.scaler.scale, scale)
            XCTAssertEqual(trainer.scaler.consecutiveSkips, step)
            XCTAssertEqual(trainer.optimizer.updates, 0, "a skipped step must not count for AdamW's bias correction")
            XCTAssertEqual(TinyTraining.optimizerState(trainer), state, "step \(step): a skipped step changed the state")
        }
        XCTAssertThrowsError(try trainer.trainStep()) { error in
            guard case let FrugalError.numericalFault(step, detail) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(step, 3)
            XCTAssertTrue(detail.contains("fp16"), detail)
        }
        XCTAssertEqual(TinyTraining.optimizerState(trainer), state)
    }

    /// The scale doubles after `growthInterval` (2) clean steps in a row; a skip (here from a
    /// NaN put into a weight) halves it and restarts the count.
    func testFP16ScaleGrowsAfterCleanSteps() throws {
        var c = configuration(.fp16)
        c.lossScale.initialScale = 1024
        c.lossScale.growthInterval = 2
        let trainer = try TinyTraining.trainer(c, sequences)
        func scaleAfterStep() throws -> Float? { try TinyTraining.step(trainer).lossScale }

        XCTAssertEqual(try scaleAfterStep(), 1024)
        let before = TinyTraining.optimizerState(trainer)
        let kept = poke(trainer, .nan)
        guard case let .skippedStep(step, scale) = try trainer.trainStep() else { return XCTFail("NaN gradients were applied") }
        XCTAssertEqual(step, 2)
        XCTAssertEqual(scale, 512)
        poke(trainer, kept)
        XCTAssertEqual(TinyTraining.optimizerState(trainer), before, "the skipped step changed the state")
        XCTAssertEqual(trainer.optimizer.updates, 1)
        XCTAssertEqual(try scaleAfterStep(), 512, "one clean step since the skip")
        XCTAssertEqual(try scaleAfterStep(), 1024, "two clean steps: doubled")
        XCTAssertEqual(try scaleAfterStep(), 1024)
        XCTAssertEqual(try scaleAfterStep(), 2048)
        XCTAssertEqual(trainer.optimizer.updates, 5)
        XCTAssertEqual(trainer.scaler.skippedSteps, 1)
        assertRepresentable(trainer, in: .f16, "after fp16 steps")
    }

    // MARK: - bf16 and pure bf16

    /// Runs `steps` steps of AdamW on the same batch; returns the losses.
    private func losses(_ trainer: Trainer, steps: Int) throws -> [Double] {
        try (0..<steps).map { _ in try TinyTraining.step(trainer).loss }
    }

    /// Under bf16 the model computes with bf16 values that are its f32 masters rounded, the
    /// masters keep what rounding drops, and the loss falls.
    func testBF16ComputesWithRoundedMasters() throws {
        let trainer = try TinyTraining.trainer(configuration(.bf16), sequences)
        let losses = try losses(trainer, steps: 6)
        XCTAssertLessThan(losses.last!, losses.first! - 0.1, "\(losses)")
        assertRepresentable(trainer, in: .bf16, "after bf16 steps")
        let state = TinyTraining.optimizerState(trainer)
        var differing = 0
        for p in trainer.parameters.parameters {
            let values = state[p.name]!
            guard let master = state[p.name + ".master"] else { return XCTFail("no master for '\(p.name)'") }
            XCTAssertEqual(master.map { HalfPrecision.round($0, to: .bf16) }, values, "'\(p.name)' is not its master rounded")
            differing += zip(master, values).filter { $0 != $1 }.count
        }
        XCTAssertGreaterThan(differing, trainer.parameters.count / 2, "the masters should hold more than bf16 does")
    }

    /// bf16 and fp16 store forward activations in their own dtype unless told otherwise, and
    /// train as a run with f32 activations does: the same falling losses within the storage's
    /// rounding, and not bit for bit.
    func testSixteenBitActivationsTrainLikeF32() throws {
        for precision in [PrecisionPolicy.bf16, .fp16] {
            var c = configuration(precision)
            XCTAssertEqual(c.activationDType, precision.computeDType)
            let stored = try losses(try TinyTraining.trainer(c, sequences), steps: 8)
            c.activations = .f32
            let exact = try losses(try TinyTraining.trainer(c, sequences), steps: 8)
            XCTAssertLessThan(stored.last!, stored.first! - 0.1, "\(precision): \(stored)")
            XCTAssertNotEqual(stored, exact, "\(precision): 16-bit activations changed nothing")
            for (a, b) in zip(stored, exact) { XCTAssertEqual(a, b, accuracy: 0.02 * b, "\(precision): \(stored) vs \(exact)") }
        }
    }

    /// Pure bf16 keeps no masters: the weights are bf16 values themselves, and the loss falls.
    func testPureBF16KeepsNoMasters() throws {
        let trainer = try TinyTraining.trainer(configuration(.pureBF16), sequences)
        assertRepresentable(trainer, in: .bf16, "after set-up")
        let losses = try losses(trainer, steps: 6)
        XCTAssertLessThan(losses.last!, losses.first! - 0.1, "\(losses)")
        assertRepresentable(trainer, in: .bf16, "after pure-bf16 steps")
        XCTAssertFalse(TinyTraining.optimizerState(trainer).keys.contains { $0.hasSuffix(".master") })
    }

    /// An update far below half a bf16 step is lost in pure bf16 but kept by bf16's f32
    /// masters (full fine-tune, SGD at a tiny rate).
    func testOnlyMastersKeepTinyUpdates() throws {
        let rate: Float = 1e-5
        func trainer(_ precision: PrecisionPolicy) throws -> Trainer {
            var c = configuration(precision, .full)
            c.optimizer = .sgd
            c.momentum = 0
            c.learningRate = rate
            return try TinyTraining.trainer(c, sequences)
        }
        let pure = try trainer(.pureBF16), mixed = try trainer(.bf16)
        let start = TinyTraining.values(pure)
        XCTAssertEqual(TinyTraining.values(mixed), start)
        let mastersBefore = TinyTraining.optimizerState(mixed)
        _ = try TinyTraining.step(pure)
        _ = try TinyTraining.step(mixed)
        // |Δ| = rate·|g| is under half a bf16 step (more than |x|·2⁻⁹) wherever |x| ≥ 512·rate·max|g|.
        let gradients = TinyTraining.gradients(mixed)
        XCTAssertEqual(TinyTraining.gradients(pure), gradients, "both computed with the same bf16 weights")
        let largest = gradients.map { $0.map(abs).max() ?? 0 }.max()!
        let threshold = 512 * rate * largest
        var large = 0
        for (after, before) in zip(TinyTraining.values(pure), start) {
            for (a, b) in zip(after, before) where abs(b) >= threshold {
                large += 1
                XCTAssertEqual(a, b, "an update under half a bf16 step was not lost")
            }
        }
        XCTAssertGreaterThan(large, TinyTraining.values(pure).reduce(0) { $0 + $1.count } / 2)
        // Every master whose update is well above half an f32 step moved.
        let state = TinyTraining.optimizerState(mixed)
        var expected = 0, moved = 0
        for (p, g) in zip(mixed.parameters.parameters, gradients) {
            let before = try XCTUnwrap(mastersBefore[p.name + ".master"], "no master for '\(p.name)'")
            let after = try XCTUnwrap(state[p.name + ".master"])
            for i in g.indices where abs(rate * g[i]) > abs(before[i]) * 0x1p-22 {
                expected += 1
                if after[i] != before[i] { moved += 1 }
            }
        }
        XCTAssertGreaterThan(expected, 1000)
        XCTAssertEqual(moved, expected, "bf16 masters should record the tiny update")
    }

    // MARK: - Non-finite values

    /// A NaN in a weight stops an fp32, bf16 or pure-bf16 run with a numerical fault naming the step.
    func testNaNStopsTheRunNamingTheStep() throws {
        for precision in [PrecisionPolicy.fp32, .bf16, .pureBF16] {
            let trainer = try TinyTraining.trainer(configuration(precision), sequences)
            _ = try TinyTraining.step(trainer)
            _ = try TinyTraining.step(trainer)
            poke(trainer, .nan, parameter: 3, at: 5)
            XCTAssertThrowsError(try trainer.trainStep(), "\(precision)") { error in
                guard case let FrugalError.numericalFault(step, detail) = error else { return XCTFail("\(precision): \(error)") }
                XCTAssertEqual(step, 3, "\(precision): \(detail)")
            }
        }
    }
}
