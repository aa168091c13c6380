// PhaseUpdate: the optimizer update the reward, DPO and PPO phases share, over one or more
// trainable sets (LoRA adapters, a value head) — loss scaling, checks, clipping, schedule.
import Foundation
import FrugalCore
import FrugalModels

/// What a reward, DPO or PPO trainer reports for one step.
public enum PhaseEvent: Sendable {
    /// An update was applied: the SFT trainer's figures (loss is the phase's own loss), and the
    /// phase's figures of the step's batch ("accuracy", "margin", "kl", …).
    case step(StepMetrics, figures: [String: Double])
    /// fp16 gradients overflowed: the update was skipped and the loss scale backed off.
    case skippedStep(step: Int, newLossScale: Float)
}

/// Applies one update to several trainable sets as if they were one: under fp16 the gradients
/// (computed for `lossScale · loss`) are rounded to f16 and the update is skipped on overflow;
/// otherwise a non-finite loss or gradient is an error. The global gradient norm over every set
/// is clipped, then each set's optimizer steps at the scheduled rate.
final class PhaseUpdate {
    /// The trainable sets by name ("adapters", "critic", …); the names prefix their state tensors.
    let groups: [(name: String, parameters: TrainableParameters)]
    let optimizers: [Optimizer]
    let configuration: TrainingConfiguration
    let backend: TrainingBackend
    let schedule: LearningRateSchedule
    var scaler: LossScaler
    /// Updates attempted (applied or skipped).
    var updates = 0
    /// Times each step's phases on the device; the trainers start it and mark their phases.
    let timer: PhaseTimer

    /// - Parameters:
    ///   - totalUpdates: the updates of the whole run, for the schedule.
    ///   - storeComputeCopies: by group name, what replaces a parameter's f32 tensor by its 16-bit
    ///     compute copy once its master exists under fp16 and bf16 (`Optimizer.init`'s
    ///     `storeComputeCopy`: `Decoder.storeTrainable`, `ValueHead.storeTrainable`).
    init(_ groups: [(name: String, parameters: TrainableParameters)], configuration: TrainingConfiguration,
         backend: TrainingBackend, totalUpdates: Int, storeComputeCopies: [String: (Int) -> Void] = [:]) {
        self.groups = groups
        self.configuration = configuration
        self.backend = backend
        optimizers = groups.map {
            Optimizer($0.parameters, configuration: configuration, backend: backend, storeComputeCopy: storeComputeCopies[$0.name])
        }
        schedule = LearningRateSchedule(peak: configuration.learningRate, kind: configuration.schedule,
                                        warmupSteps: configuration.warmupSteps, totalSteps: totalUpdates)
        scaler = LossScaler(configuration.lossScale)
        timer = backend.makePhaseTimer()
    }

    /// The factor losses are multiplied by before backward (fp16's loss scale, else 1).
    var lossScale: Float { configuration.precision == .fp16 ? scaler.scale : 1 }

    /// Zeroes every gradient, before the backward passes of an update.
    func zeroGradients() {
        for group in groups { group.parameters.zeroGradients() }
    }

    /// Every optimizer's state tensors, for checkpoints: `<group>/<tensor>`.
    var stateTensors: [(String, Tensor)] {
        zip(groups, optimizers).flatMap { group, optimizer in optimizer.stateTensors.map { (group.name + "/" + $0.0, $0.1) } }
    }

    /// Unscales, checks, clips and applies the gradients.
    /// - Returns: the rate and the gradient norm before clipping, or nil when fp16 overflowed and
    ///   the update was skipped.
    /// - Throws: `FrugalError.numericalFault` for a non-finite loss or gradient (fp32, bf16) or
    ///   too many overflowing updates in a row (fp16).
    func apply(loss: Double, step: Int) throws -> (rate: Float, norm: Double)? {
        updates += 1
        let parameters = groups.flatMap(\.parameters.parameters)
        let fp16 = configuration.precision == .fp16
        if fp16 { for p in parameters { backend.roundInPlace(p.gradient, to: .f16) } }
        let firstBad = parameters.first { !backend.allFinite($0.gradient) }
        if fp16 {
            let scale = scaler.scale
            guard scaler.update(gradientsFinite: firstBad == nil) else {
                guard scaler.consecutiveSkips < configuration.lossScale.maxConsecutiveSkips else {
                    throw FrugalError.numericalFault(step: step, detail: "\(scaler.consecutiveSkips) updates in a row overflowed in fp16 (last in '\(firstBad!.name)')")
                }
                return nil
            }
            for p in parameters { backend.scale(p.gradient, by: 1 / scale) }
        } else if !loss.isFinite || firstBad != nil {
            throw FrugalError.numericalFault(step: step, detail: loss.isFinite ? "non-finite gradient in '\(firstBad!.name)'" : "the loss is \(loss)")
        }
        let norm = parameters.reduce(0.0) { $0 + backend.sumOfSquares($1.gradient) }.squareRoot()
        if configuration.maxGradientNorm > 0, norm > Double(configuration.maxGradientNorm) {
            let factor = Float(Double(configuration.maxGradientNorm) / (norm + 1e-6))
            for p in parameters { backend.scale(p.gradient, by: factor) }
        }
        let rate = schedule.rate(at: updates - 1)
        for optimizer in optimizers { optimizer.step(rate: rate) }
        timer.mark(.optimizer)
        return (rate, norm)
    }

    /// The step's figures as the SFT trainer reports them, with the timer's phases.
    func metrics(step: Int, totalSteps: Int, loss: Double, rate: Float, norm: Double, tokens: Int, targetTokens: Int,
                 since start: ContinuousClock.Instant, epoch: Int) -> StepMetrics {
        let elapsed = ContinuousClock.now - start
        return StepMetrics(step: step, totalSteps: totalSteps, loss: loss, learningRate: rate, gradientNorm: norm,
                           tokens: tokens, targetTokens: targetTokens,
                           seconds: elapsed.inSeconds,
                           phaseSeconds: Dictionary(uniqueKeysWithValues: timer.finish().map { ($0.key.rawValue, $0.value) }),
                           lossScale: configuration.precision == .fp16 ? scaler.scale : nil,
                           memory: backend.ledger.snapshot, epoch: epoch)
    }
}

/// Numerically stable pieces of the phases' losses.
public enum PhaseMath {
    /// `log σ(x)`.
    public static func logSigmoid(_ x: Double) -> Double {
        x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x))
    }

    /// `σ(x)`.
    public static func sigmoid(_ x: Double) -> Double {
        x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x))
    }
}
