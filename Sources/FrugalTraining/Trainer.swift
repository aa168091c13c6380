// Trainer: the fine-tuning loop — micro-batches, accumulation, loss scaling, clipping, update.
import Foundation
import FrugalCore
import FrugalModels

/// Runs optimizer steps over a data loader: the SFT recipe.
///
/// One step draws `gradientAccumulation` micro-batches, normalizes the summed loss by the
/// number of target tokens of all of them together (so accumulation equals one big batch),
/// runs forward and backward on each, then (fp16) unscales and skips on overflow, clips the
/// global gradient norm, and updates with the scheduled learning rate.
public final class Trainer: @unchecked Sendable {
    public let decoder: Decoder
    public let parameters: TrainableParameters
    public let configuration: TrainingConfiguration
    public internal(set) var loader: DataLoader
    let optimizer: Optimizer
    /// The backend the trainer computes on.
    public let backend: TrainingBackend
    let schedule: LearningRateSchedule
    /// The fp16 loss scaler (present under every policy; only fp16 uses it).
    public internal(set) var scaler: LossScaler
    /// The dropout stream.
    var random: SplitMix64
    /// Times forward, backward and the optimizer of each step on the device.
    let phaseTimer: PhaseTimer
    /// Optimizer steps attempted so far (applied or skipped).
    public internal(set) var step = 0

    /// A trainer at step 0. Under fp16 and bf16 it replaces each f32 trainable tensor of `decoder`
    /// (and of `parameters`) by its 16-bit compute copy as the optimizer takes the f32 master
    /// (`Decoder.storeTrainable`); `storesComputeCopies: false` keeps them in f32 tensors holding
    /// rounded values instead (the former way, with the same results, for comparisons).
    /// - Throws: `FrugalError.invalidArgument` when the backend cannot train.
    public init(decoder: Decoder, parameters: TrainableParameters, configuration: TrainingConfiguration,
                loader: DataLoader, storesComputeCopies: Bool = true) throws {
        let backend = try decoder.trainingBackend()
        guard configuration.steps > 0, configuration.gradientAccumulation > 0 else {
            throw FrugalError.invalidArgument("steps and gradient accumulation must be positive")
        }
        if configuration.offloadActivations && !configuration.checkpointing {
            throw FrugalError.invalidArgument("activation offload moves the block inputs checkpointing keeps: it needs checkpointing")
        }
        if configuration.fusedOptimizerStep {
            try FusedStep.check(configuration)
        } else if parameters.sharesBlockGradients {
            throw FrugalError.invalidArgument("blocks share gradient tensors, which only the fused optimizer step can use")
        }
        self.decoder = decoder
        self.parameters = parameters
        self.configuration = configuration
        self.loader = loader
        self.backend = backend
        phaseTimer = backend.makePhaseTimer()
        let dtype = configuration.precision.trainableDType
        optimizer = Optimizer(parameters, configuration: configuration, backend: backend,
                              storeComputeCopy: storesComputeCopies ? { decoder.storeTrainable(parameters, at: $0, as: dtype) } : nil)
        schedule = LearningRateSchedule(peak: configuration.learningRate, kind: configuration.schedule,
                                        warmupSteps: configuration.warmupSteps, totalSteps: configuration.steps)
        scaler = LossScaler(configuration.lossScale)
        random = SplitMix64(seed: configuration.seed ^ 0x5EED)
    }

    /// Whether every configured step has run.
    public var isFinished: Bool { step >= configuration.steps }

    /// Runs one optimizer step and reports it.
    /// - Throws: `FrugalError.numericalFault` on a non-finite loss (fp32, bf16) or too many
    ///   overflowing steps in a row (fp16).
    public func trainStep() throws -> TrainingEvent {
        let started = ContinuousClock.now
        phaseTimer.start()
        let micro = (0..<configuration.gradientAccumulation).map { _ in loader.next() }
        let targets = micro.reduce(0) { $0 + $1.batch.targetTokenCount }
        let tokens = micro.reduce(0) { $0 + $1.batch.segments.reduce(0) { $0 + ($1 >= 0 ? 1 : 0) } }
        let fp16 = configuration.precision == .fp16
        let lossScale = fp16 ? scaler.scale : 1
        parameters.zeroGradients()
        let fused = configuration.fusedOptimizerStep ? FusedStep(self, rate: schedule.rate(at: step)) : nil
        var lossSum = 0.0
        for m in micro {
            let b = m.batch
            let batch = TrainingBatch(tokens: b.tokens, targets: b.targets, positions: b.positions, segments: b.segments,
                                      batch: b.batch)
            lossSum += decoder.accumulateGradients(batch, into: parameters, options: configuration.passOptions(
                gradientScale: lossScale / Float(max(targets, 1))), random: &random, timer: phaseTimer, blockDone: fused.map { f in { f.blockDone($0) } })
        }
        step += 1
        let loss = lossSum / Double(max(targets, 1))
        if let fused {
            let norm = try fused.finish(loss: loss, step: step)
            phaseTimer.mark(.optimizer)
            return .step(metrics(loss: loss, rate: fused.rate, norm: norm, tokens: tokens, targets: targets, since: started))
        }
        if fp16 {
            // Gradients stored in f16 overflow to infinity, as on the GPU.
            for p in parameters.parameters { backend.roundInPlace(p.gradient, to: .f16) }
        }
        // One pass for the norm and the finiteness check: a NaN or ∞ makes its tensor's sum non-finite.
        let squares = backend.sumsOfSquares(parameters.parameters.map(\.gradient))
        let firstBad = squares.firstIndex { !$0.isFinite }.map { parameters.parameters[$0] }
        if fp16 {
            if !scaler.update(gradientsFinite: firstBad == nil) {
                guard scaler.consecutiveSkips < configuration.lossScale.maxConsecutiveSkips else {
                    throw FrugalError.numericalFault(step: step, detail: "\(scaler.consecutiveSkips) steps in a row overflowed in fp16 (last in '\(firstBad!.name)'); loss scale now \(scaler.scale)")
                }
                return .skippedStep(step: step, newLossScale: scaler.scale)
            }
            for p in parameters.parameters { backend.scale(p.gradient, by: 1 / lossScale) }
        } else if !loss.isFinite || firstBad != nil {
            throw FrugalError.numericalFault(step: step, detail: loss.isFinite
                ? "non-finite gradient in '\(firstBad!.name)'" : "the loss is \(loss)")
        }
        let norm = squares.reduce(0, +).squareRoot() / Double(lossScale)
        if configuration.maxGradientNorm > 0, norm > Double(configuration.maxGradientNorm) {
            let factor = Float(Double(configuration.maxGradientNorm) / (norm + 1e-6))
            for p in parameters.parameters { backend.scale(p.gradient, by: factor) }
        }
        let rate = schedule.rate(at: step - 1)
        optimizer.step(rate: rate)
        phaseTimer.mark(.optimizer)
        return .step(metrics(loss: loss, rate: rate, norm: norm, tokens: tokens, targets: targets, since: started))
    }

    /// The figures of the step just applied.
    private func metrics(loss: Double, rate: Float, norm: Double, tokens: Int, targets: Int,
                         since started: ContinuousClock.Instant) -> StepMetrics {
        let phases = phaseTimer.finish()
        let elapsed = ContinuousClock.now - started
        return StepMetrics(
            step: step, totalSteps: configuration.steps, loss: loss, learningRate: rate, gradientNorm: norm,
            tokens: tokens, targetTokens: targets,
            seconds: elapsed.inSeconds,
            phaseSeconds: Dictionary(uniqueKeysWithValues: phases.map { ($0.key.rawValue, $0.value) }),
            lossScale: configuration.precision == .fp16 ? scaler.scale : nil, memory: backend.ledger.snapshot,
            epoch: loader.state.epoch)
    }
}
