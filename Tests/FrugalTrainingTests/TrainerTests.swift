// TrainerTests: the SFT loop on the CPU with tiny fixture models: accumulating micro-batches
// equals one big batch (padding, packing, LayerNorm), optimizers and schedules follow their
// closed forms, clipping, frozen layers, and that training lowers the loss.

import Foundation
import FrugalCore
import FrugalCPU
import FrugalFormats
@testable import FrugalModels
@testable import FrugalTraining
import XCTest

/// Tiny random-weight models (FrugalModelsTests' fixtures: llama3 with RMSNorm, OPT with
/// LayerNorm, biases and tied embeddings) and synthetic token sequences, shared by the
/// trainer, checkpoint and precision tests.
enum TinyTraining {
    static let models = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("FrugalModelsTests/Fixtures/models")
    /// The fixtures' vocabulary size.
    static let vocabulary: UInt64 = 256

    /// `count` random sequences with lengths drawn from `lengths`: the first `masked` positions
    /// carry no target (a prompt), the others predict the next token, the last predicts nothing.
    static func sequences(_ count: Int, lengths: ClosedRange<Int>, masked: Int = 3, seed: UInt64 = 1) -> [TokenizedExample] {
        var random = SplitMix64(seed: seed)
        return (0..<count).map { _ in
            let length = lengths.lowerBound + Int(random.next() % UInt64(lengths.count))
            let tokens = (0..<length).map { _ in Int32(random.next() % vocabulary) }
            let targets = (0..<length).map { t in
                t >= masked && t + 1 < length ? tokens[t + 1] : TokenizedExample.ignoredTarget
            }
            return TokenizedExample(tokens: tokens, targets: targets)
        }
    }

    /// LoRA on every projection (rank 4, alpha 8, no dropout), constant rate, no clipping.
    static func configuration(_ method: TrainingMethod = .lora(LoRAConfiguration(rank: 4, alpha: 8, dropout: 0,
                                                                                    targets: ["all-linear"])),
                              steps: Int = 10, microBatch: Int = 2) -> TrainingConfiguration {
        var c = TrainingConfiguration()
        c.method = method
        c.steps = steps
        c.microBatch = microBatch
        c.learningRate = 1e-2
        c.schedule = .constant
        c.maxGradientNorm = 0
        c.seed = 7
        return c
    }

    /// A trainer at step 0 on a freshly loaded fixture model, training what `configuration.method`
    /// says (adapters seeded by `configuration.seed`), over a loader of `microBatch` rows.
    /// `trainableDType` creates the trainable tensors (the policy's `createdDType` unless given:
    /// f32 is the old way under pure bf16, fp16 and bf16 — f32 tensors rounded to the compute
    /// dtype after every update, the Trainer storing no 16-bit compute copies).
    static func trainer(_ configuration: TrainingConfiguration, _ sequences: [TokenizedExample],
                        family: String = "llama3", strategy: BatchStrategy = .padding(length: nil),
                        shuffle: Bool = false, trainableDType: DType? = nil) throws -> Trainer {
        let dtype = trainableDType ?? configuration.precision.createdDType
        let files = try ModelFiles(path: models.appendingPathComponent(family).path)
        let decoder = try files.decoder(on: CPUBackend(), trainable: configuration.method == .full, trainableDType: dtype)
        // The fused step shares one block's gradient tensors, as `frugal train --fused-step` does.
        let share = configuration.fusedOptimizerStep
        let parameters = switch configuration.method {
        case let .lora(lora):
            try decoder.attachLoRA(lora, seed: configuration.seed, frozenLayers: configuration.frozenLayers, shareBlockGradients: share,
                                   dtype: dtype)
        case .full: try decoder.allWeights(frozenLayers: configuration.frozenLayers, shareBlockGradients: share)
        }
        let loader = try DataLoader(sequences: sequences, batchSize: configuration.microBatch, strategy: strategy,
                                    shuffle: shuffle, seed: configuration.seed)
        return try Trainer(decoder: decoder, parameters: parameters, configuration: configuration, loader: loader,
                           storesComputeCopies: trainableDType != .f32)
    }

    /// An f32 vector of `values` on `backend`.
    static func tensor(_ values: [Float], on backend: Backend, _ category: MemoryCategory) -> Tensor {
        values.withUnsafeBytes { backend.upload($0, [values.count], .f32, category) }
    }

    /// The trainable values, parameter by parameter.
    static func values(_ trainer: Trainer) -> [[Float]] {
        trainer.parameters.parameters.map { trainer.decoder.backend.download($0.value) }
    }

    /// The gradients left by the last step (after unscaling and clipping).
    static func gradients(_ trainer: Trainer) -> [[Float]] {
        trainer.parameters.parameters.map { trainer.decoder.backend.download($0.gradient) }
    }

    /// Every optimizer state tensor (weights, masters, moments) by name.
    static func optimizerState(_ trainer: Trainer) -> [String: [Float]] {
        Dictionary(uniqueKeysWithValues: trainer.optimizer.stateTensors.map { ($0, trainer.decoder.backend.download($1)) })
    }

    /// Runs one step and returns its metrics, failing when the step was not applied.
    static func step(_ trainer: Trainer, file: StaticString = #filePath, line: UInt = #line) throws -> StepMetrics {
        let event = try trainer.trainStep()
        guard case let .step(metrics) = event else {
            return try XCTUnwrap(StepMetrics?.none, "step \(trainer.step) was not applied: \(event)", file: file, line: line)
        }
        return metrics
    }

    /// The largest |a − b| over all values, and the index of the parameter where it is.
    static func largestDifference(_ a: [[Float]], _ b: [[Float]]) -> (Float, Int) {
        precondition(a.count == b.count, "\(a.count) against \(b.count) parameters")
        var worst: (Float, Int) = (0, 0)
        for (i, (x, y)) in zip(a, b).enumerated() {
            precondition(x.count == y.count, "parameter \(i): \(x.count) against \(y.count) values")
            for (u, v) in zip(x, y) {
                let d = u.isNaN || v.isNaN ? .infinity : abs(u - v)
                if d > worst.0 { worst = (d, i) }
            }
        }
        return worst
    }

    /// Asserts that two sets of values agree within `tolerance`, naming the worst parameter.
    static func assertClose(_ a: [[Float]], _ b: [[Float]], tolerance: Float, _ trainer: Trainer, _ what: String,
                            file: StaticString = #filePath, line: UInt = #line) {
        let (difference, index) = largestDifference(a, b)
        XCTAssertLessThanOrEqual(difference, tolerance,
                                 "\(what): '\(trainer.parameters.parameters[index].name)' differs by \(difference)",
                                 file: file, line: line)
    }
}

final class TrainerTests: XCTestCase {
    // MARK: - Gradient accumulation

    /// Runs `steps` steps over the same 8 sequences (in order) as one batch of 8 and as 4
    /// micro-batches of 2, and checks that losses, token counts and the updated parameters agree.
    private func checkAccumulation(_ method: TrainingMethod, family: String = "llama3", lengths: ClosedRange<Int>,
                                   steps: Int, file: StaticString = #filePath, line: UInt = #line) throws {
        let sequences = TinyTraining.sequences(8, lengths: lengths, seed: 3)
        var c = TinyTraining.configuration(method, steps: steps)
        c.optimizer = .sgd
        c.momentum = 0.9
        c.learningRate = 0.5
        c.microBatch = 8
        let whole = try TinyTraining.trainer(c, sequences, family: family)
        c.microBatch = 2
        c.gradientAccumulation = 4
        let split = try TinyTraining.trainer(c, sequences, family: family)
        let start = TinyTraining.values(whole)
        TinyTraining.assertClose(TinyTraining.values(split), start, tolerance: 0, whole, "initial values", file: file, line: line)

        for step in 1...steps {
            let a = try TinyTraining.step(whole, file: file, line: line)
            let b = try TinyTraining.step(split, file: file, line: line)
            XCTAssertEqual(a.targetTokens, b.targetTokens, "step \(step): target tokens", file: file, line: line)
            XCTAssertEqual(a.tokens, b.tokens, "step \(step): tokens (padding excluded)", file: file, line: line)
            XCTAssertEqual(a.loss, b.loss, accuracy: 1e-6 * a.loss, "step \(step): loss", file: file, line: line)
            XCTAssertEqual(a.gradientNorm, b.gradientNorm, accuracy: 1e-5 * a.gradientNorm, "step \(step): gradient norm",
                           file: file, line: line)
            TinyTraining.assertClose(TinyTraining.gradients(split), TinyTraining.gradients(whole), tolerance: 1e-6, whole,
                                     "step \(step) gradients", file: file, line: line)
        }
        let after = TinyTraining.values(whole)
        TinyTraining.assertClose(TinyTraining.values(split), after, tolerance: 1e-5, whole, "values after \(steps) steps",
                                 file: file, line: line)
        // The comparison means something only if the update is far larger than the tolerance.
        XCTAssertGreaterThan(TinyTraining.largestDifference(after, start).0, 1e-2, "the steps barely moved the weights",
                             file: file, line: line)
    }

    /// Two steps (so that LoRA's A, whose gradient is zero while B is, trains too).
    func testAccumulationEqualsOneBatch() throws {
        try checkAccumulation(TinyTraining.configuration().method, lengths: 12...12, steps: 2)
    }

    /// Sequences of different lengths: each micro-batch pads to its own longest, the big batch to
    /// the longest of all, and micro-batches hold different numbers of target tokens.
    func testAccumulationEqualsOneBatchWithPadding() throws {
        let sequences = TinyTraining.sequences(8, lengths: 5...16, seed: 3)
        let perPair = stride(from: 0, to: 8, by: 2).map { sequences[$0].targetTokenCount + sequences[$0 + 1].targetTokenCount }
        XCTAssertGreaterThan(Set(perPair).count, 1, "the micro-batches should differ in target tokens")
        try checkAccumulation(TinyTraining.configuration().method, lengths: 5...16, steps: 2)
    }

    /// A full fine-tune of the LayerNorm family (norm and bias gradients, tied embeddings).
    func testAccumulationEqualsOneBatchForAFullFineTuneOfOPT() throws {
        try checkAccumulation(.full, family: "opt", lengths: 5...16, steps: 1)
    }

    /// Packed rows (several sequences per row, attention kept inside each) give the update of
    /// one padded row per sequence.
    func testPackingGivesTheUpdateOfPadding() throws {
        let sequences = TinyTraining.sequences(8, lengths: 5...16, seed: 5)
        var c = TinyTraining.configuration(steps: 2, microBatch: 8)
        c.optimizer = .sgd
        c.learningRate = 0.5
        let padded = try TinyTraining.trainer(c, sequences)
        let packed = try TinyTraining.trainer(c, sequences, strategy: .packing(length: 32))
        XCTAssertEqual(packed.loader.batchesPerEpoch, 1)
        let start = TinyTraining.values(padded)
        for _ in 0..<2 {
            let a = try TinyTraining.step(padded), b = try TinyTraining.step(packed)
            XCTAssertEqual(a.targetTokens, b.targetTokens)
            XCTAssertEqual(a.loss, b.loss, accuracy: 1e-6 * a.loss)
        }
        let after = TinyTraining.values(padded)
        TinyTraining.assertClose(TinyTraining.values(packed), after, tolerance: 1e-5, padded, "packed against padded")
        XCTAssertGreaterThan(TinyTraining.largestDifference(after, start).0, 1e-2)
    }

    // MARK: - Optimizers

    /// `torch.optim.SGD(momentum: 0.9, weight_decay: 0.1, lr: 0.1)`, two steps by hand:
    /// d = g + wd·p; b = μ·b + d; p −= lr·b.
    func testSGDFollowsPyTorchsRule() {
        let backend = CPUBackend()
        let p = TinyTraining.tensor([1, -2], on: backend, .optimizer)
        let g = TinyTraining.tensor([0.5, 0.25], on: backend, .gradients)
        let buffer = backend.zeros([2], .f32, .optimizer)
        backend.sgd(p, gradient: g, momentumBuffer: buffer, learningRate: 0.1, momentum: 0.9, weightDecay: 0.1)
        // d = [0.6, 0.05]; b = d; p = [0.94, −2.005]
        XCTAssertEqual(backend.download(p)[0], 0.94, accuracy: 1e-6)
        XCTAssertEqual(backend.download(p)[1], -2.005, accuracy: 1e-6)
        backend.sgd(p, gradient: g, momentumBuffer: buffer, learningRate: 0.1, momentum: 0.9, weightDecay: 0.1)
        // d = [0.594, 0.0495]; b = 0.9·[0.6, 0.05] + d = [1.134, 0.0945]; p = [0.8266, −2.01445]
        XCTAssertEqual(backend.download(buffer)[0], 1.134, accuracy: 1e-6)
        XCTAssertEqual(backend.download(buffer)[1], 0.0945, accuracy: 1e-6)
        XCTAssertEqual(backend.download(p)[0], 0.8266, accuracy: 1e-6)
        XCTAssertEqual(backend.download(p)[1], -2.01445, accuracy: 1e-6)
    }

    /// `torch.optim.AdamW` over three steps of changing gradients, computed in double precision.
    func testAdamWFollowsPyTorchsRule() {
        let backend = CPUBackend()
        var expected: [Double] = [1, -0.5, 0.001]
        let p = TinyTraining.tensor(expected.map(Float.init), on: backend, .optimizer)
        let m = backend.zeros([3], .f32, .optimizer), v = backend.zeros([3], .f32, .optimizer)
        var em = [Double](repeating: 0, count: 3), ev = em
        let (lr, b1, b2, eps, wd) = (0.01, 0.9, 0.999, 1e-8, 0.1)
        let gradients: [[Double]] = [[0.5, -0.25, 1e-6], [0.1, 0.3, -2], [-0.4, 0, 3]]
        for (t, g) in gradients.enumerated() {
            backend.adamW(p, gradient: TinyTraining.tensor(g.map(Float.init), on: backend, .gradients), m: m, v: v, step: t + 1,
                          learningRate: Float(lr), beta1: Float(b1), beta2: Float(b2), epsilon: Float(eps),
                          weightDecay: Float(wd))
            let c1 = 1 - pow(b1, Double(t + 1)), c2 = 1 - pow(b2, Double(t + 1))
            for i in 0..<3 {
                expected[i] *= 1 - lr * wd
                em[i] = b1 * em[i] + (1 - b1) * g[i]
                ev[i] = b2 * ev[i] + (1 - b2) * g[i] * g[i]
                expected[i] -= lr / c1 * em[i] / (ev[i].squareRoot() / c2.squareRoot() + eps)
            }
            for (i, (value, reference)) in zip(backend.download(p), expected).enumerated() {
                XCTAssertEqual(Double(value), reference, accuracy: 1e-6, "step \(t + 1), value \(i)")
            }
        }
    }

    /// Two trainer steps of SGD with momentum and weight decay equal the rule applied by hand
    /// to the gradients each step left (no clipping, constant rate).
    func testTrainerAppliesSGDWithMomentumAndWeightDecay() throws {
        var c = TinyTraining.configuration(steps: 2, microBatch: 4)
        c.optimizer = .sgd
        c.momentum = 0.9
        c.weightDecay = 0.1
        c.learningRate = 0.3
        let trainer = try TinyTraining.trainer(c, TinyTraining.sequences(4, lengths: 8...12))
        var p = TinyTraining.values(trainer)
        var buffer = p.map { [Float](repeating: 0, count: $0.count) }
        for step in 1...2 {
            let metrics = try TinyTraining.step(trainer)
            XCTAssertEqual(metrics.learningRate, 0.3)
            let g = TinyTraining.gradients(trainer)
            for i in p.indices {
                for j in p[i].indices {
                    let d = g[i][j] + c.weightDecay * p[i][j]
                    buffer[i][j] = c.momentum * buffer[i][j] + d
                    p[i][j] -= c.learningRate * buffer[i][j]
                }
            }
            TinyTraining.assertClose(TinyTraining.values(trainer), p, tolerance: 1e-6, trainer, "SGD step \(step)")
        }
        let state = TinyTraining.optimizerState(trainer)
        TinyTraining.assertClose(trainer.parameters.parameters.map { state[$0.name + ".m"] ?? [] }, buffer, tolerance: 1e-6,
                                 trainer, "momentum buffers")
    }

    // MARK: - Learning-rate schedules

    /// Warm-up, then constant, linear and cosine decay, at chosen steps against the closed forms.
    func testSchedulesFollowTheirClosedForms() {
        let peak: Float = 1e-3
        func rate(_ kind: ScheduleKind, _ step: Int) -> Float {
            LearningRateSchedule(peak: peak, kind: kind, warmupSteps: 10, totalSteps: 110).rate(at: step)
        }
        for kind in ScheduleKind.allCases {
            // Linear warm-up: the first step already trains, the 10th reaches the peak.
            XCTAssertEqual(rate(kind, 0), peak / 10, accuracy: 1e-9, "\(kind)")
            XCTAssertEqual(rate(kind, 4), peak / 2, accuracy: 1e-9, "\(kind)")
            XCTAssertEqual(rate(kind, 9), peak, accuracy: 1e-9, "\(kind)")
            XCTAssertEqual(rate(kind, 10), peak, accuracy: 1e-9, "\(kind): decay starts at the peak")
        }
        for step in [10, 35, 60, 109, 110, 500] { XCTAssertEqual(rate(.constant, step), peak) }
        // progress = (step − 10) / 100
        XCTAssertEqual(rate(.linear, 35), peak * 0.75, accuracy: 1e-9)
        XCTAssertEqual(rate(.linear, 60), peak * 0.5, accuracy: 1e-9)
        XCTAssertEqual(rate(.linear, 109), peak * 0.01, accuracy: 1e-9)
        XCTAssertEqual(rate(.linear, 110), 0, accuracy: 1e-12)
        XCTAssertEqual(rate(.linear, 200), 0, accuracy: 1e-12, "no negative rate past the end")
        // 0.5·(1 + cos(π·progress))
        XCTAssertEqual(rate(.cosine, 35), peak * Float(0.5 * (1 + cos(Double.pi / 4))), accuracy: 1e-9)
        XCTAssertEqual(rate(.cosine, 60), peak * 0.5, accuracy: 1e-9)
        XCTAssertEqual(rate(.cosine, 85), peak * Float(0.5 * (1 + cos(3 * Double.pi / 4))), accuracy: 1e-9)
        XCTAssertEqual(rate(.cosine, 110), 0, accuracy: 1e-9)
        // Without warm-up, step 0 is the peak.
        XCTAssertEqual(LearningRateSchedule(peak: peak, kind: .cosine, warmupSteps: 0, totalSteps: 4).rate(at: 0), peak)
        XCTAssertEqual(LearningRateSchedule(peak: peak, kind: .linear, warmupSteps: 0, totalSteps: 4).rate(at: 2), peak / 2)
    }

    // MARK: - Gradient clipping

    /// With a tiny maximum norm the applied SGD update is `−lr·g·max/(‖g‖ + 1e-6)` of the raw
    /// gradient `g`; with a large one the update is that of no clipping.
    func testClippingScalesTheUpdateToTheMaximumNorm() throws {
        let sequences = TinyTraining.sequences(4, lengths: 8...12)
        var c = TinyTraining.configuration(steps: 1, microBatch: 4)
        c.optimizer = .sgd
        c.momentum = 0
        c.learningRate = 0.1
        let free = try TinyTraining.trainer(c, sequences)
        c.maxGradientNorm = 1e6
        let loose = try TinyTraining.trainer(c, sequences)
        c.maxGradientNorm = 1e-3
        let clipped = try TinyTraining.trainer(c, sequences)
        let start = TinyTraining.values(free)

        let freeMetrics = try TinyTraining.step(free)
        let g = TinyTraining.gradients(free)
        let norm = g.reduce(0.0) { $0 + $1.reduce(0.0) { $0 + Double($1) * Double($1) } }.squareRoot()
        XCTAssertEqual(freeMetrics.gradientNorm, norm, accuracy: 1e-6 * norm)
        XCTAssertGreaterThan(norm, 1e-2, "the raw gradient should be far above the maximum norm")

        _ = try TinyTraining.step(loose)
        TinyTraining.assertClose(TinyTraining.values(loose), TinyTraining.values(free), tolerance: 0, loose,
                                 "a norm under the maximum is not clipped")

        let clippedMetrics = try TinyTraining.step(clipped)
        XCTAssertEqual(clippedMetrics.gradientNorm, norm, accuracy: 1e-6 * norm, "the reported norm is before clipping")
        let factor = Float(1e-3 / (norm + 1e-6))
        let expected = zip(start, g).map { p, g in zip(p, g).map { $0 - c.learningRate * $1 * factor } }
        TinyTraining.assertClose(TinyTraining.values(clipped), expected, tolerance: 1e-8, clipped, "clipped update")
        let update = zip(TinyTraining.values(clipped), start).reduce(0.0) { sum, pair in
            sum + zip(pair.0, pair.1).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }
        }.squareRoot()
        XCTAssertEqual(update, Double(c.learningRate) * 1e-3, accuracy: 1e-6, "‖Δp‖ = lr · max")
    }

    // MARK: - Frozen layers

    /// LoRA with block 0 frozen puts adapters on block 1 only.
    func testLoRAFrozenLayersGetNoAdapters() throws {
        var c = TinyTraining.configuration(steps: 1, microBatch: 4)
        c.frozenLayers = [0]
        let trainer = try TinyTraining.trainer(c, TinyTraining.sequences(4, lengths: 8...12))
        let names = trainer.parameters.parameters.map(\.name)
        XCTAssertEqual(names.count, 2 * 7, "A and B on the seven projections of one block")
        XCTAssertTrue(names.allSatisfy { $0.contains("layers.1.") }, "\(names)")
        let blocks = trainer.decoder.weights.blocks
        for role in ProjectionRole.allCases {
            XCTAssertNil(blocks[0][role]?.lora, "block 0 \(role)")
            XCTAssertNotNil(blocks[1][role]?.lora, "block 1 \(role)")
        }
        _ = try TinyTraining.step(trainer)
    }

    /// A full fine-tune with block 1 frozen leaves its weights as loaded and changes block 0's
    /// and the embedding's.
    func testFullFineTuneFrozenLayersDoNotChange() throws {
        var c = TinyTraining.configuration(.full, steps: 1, microBatch: 4)
        c.frozenLayers = [1]
        let trainer = try TinyTraining.trainer(c, TinyTraining.sequences(4, lengths: 8...12))
        XCTAssertFalse(trainer.parameters.parameters.contains { $0.name.hasPrefix("blocks.1.") })
        let backend = trainer.decoder.backend
        func snapshot() -> [String: [Float]] {
            Dictionary(uniqueKeysWithValues: trainer.decoder.weights.namedTensors.map { ($0, backend.download($1)) })
        }
        let before = snapshot()
        _ = try TinyTraining.step(trainer)
        let after = snapshot()
        for (name, values) in before.sorted(by: { $0.key < $1.key }) {
            if name.hasPrefix("blocks.1.") {
                XCTAssertEqual(after[name], values, "frozen '\(name)' changed")
            } else {
                XCTAssertNotEqual(after[name], values, "trainable '\(name)' did not change")
            }
        }
        XCTAssertTrue(before.keys.contains { $0.hasPrefix("blocks.0.") } && before.keys.contains { $0.hasPrefix("blocks.1.") })
    }

    // MARK: - Learning

    /// Thirty steps of LoRA on four fixed sequences lower the loss by more than 30%, with the
    /// rate of each step as the warm-up/cosine schedule says.
    func testTrainingLowersTheLoss() throws {
        var c = TinyTraining.configuration(.lora(LoRAConfiguration(rank: 8, alpha: 16, dropout: 0, targets: ["all-linear"])),
                                           steps: 30, microBatch: 4)
        c.learningRate = 2e-2
        c.schedule = .cosine
        c.warmupSteps = 3
        c.maxGradientNorm = 1
        let trainer = try TinyTraining.trainer(c, TinyTraining.sequences(4, lengths: 10...16))
        let schedule = LearningRateSchedule(peak: c.learningRate, kind: .cosine, warmupSteps: 3, totalSteps: 30)
        var losses = [Double]()
        while !trainer.isFinished {
            let metrics = try TinyTraining.step(trainer)
            XCTAssertEqual(metrics.learningRate, schedule.rate(at: metrics.step - 1), "step \(metrics.step)")
            XCTAssertEqual(metrics.totalSteps, 30)
            losses.append(metrics.loss)
        }
        XCTAssertEqual(losses.count, 30)
        let final = losses.suffix(3).reduce(0, +) / 3
        XCTAssertLessThan(final, 0.7 * losses[0], "losses \(losses.map { String(format: "%.3f", $0) })")
    }

    // MARK: - Measurement

    /// Every step reports forward, backward and the optimizer separately; with accumulation each
    /// phase adds up over the micro-batches, and the phases account for the step's time.
    func testStepsReportTheirPhases() throws {
        var c = TinyTraining.configuration(steps: 2, microBatch: 2)
        c.gradientAccumulation = 3
        let trainer = try TinyTraining.trainer(c, TinyTraining.sequences(12, lengths: 10...16))
        let metrics = try TinyTraining.step(trainer)
        let phases = try XCTUnwrap(metrics.phaseSeconds)
        XCTAssertEqual(Set(phases.keys), ["forward", "backward", "optimizer"])
        for (phase, seconds) in phases { XCTAssertGreaterThan(seconds, 0, phase) }
        let sum = phases.values.reduce(0, +)
        XCTAssertLessThanOrEqual(sum, metrics.seconds)
        XCTAssertGreaterThan(sum, 0.5 * metrics.seconds, "phases \(phases) of a \(metrics.seconds) s step")
    }
}
