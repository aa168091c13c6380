// DPOTrainer: Direct Preference Optimization (Rafailov et al., 2023, arXiv:2305.18290) with the
// reference being the same decoder with its adapters switched off — no second model in memory.
import Foundation
import FrugalCore
import FrugalModels

/// The DPO loss of one pair from the four sequence log-probabilities.
public struct DPOLoss: Sendable, Equatable {
    /// `−log σ(β·((π_c − ref_c) − (π_r − ref_r)))`
    public var loss: Double
    /// `∂loss/∂π_c = −β·σ(−z)`; `∂loss/∂π_r` is its negative.
    public var dPolicyChosen: Double
    /// The implicit rewards `β·(π − ref)` of the chosen and the rejected reply.
    public var chosenReward: Double
    public var rejectedReward: Double

    /// The loss with inverse temperature `beta`.
    public init(policyChosen: Double, policyRejected: Double, referenceChosen: Double, referenceRejected: Double,
                beta: Double) {
        chosenReward = beta * (policyChosen - referenceChosen)
        rejectedReward = beta * (policyRejected - referenceRejected)
        let z = chosenReward - rejectedReward
        loss = -PhaseMath.logSigmoid(z)
        dPolicyChosen = -beta * PhaseMath.sigmoid(-z)
    }

    /// `chosenReward − rejectedReward`.
    public var margin: Double { chosenReward - rejectedReward }
}

/// Figures of DPO on held-out pairs.
public struct DPOEvaluation: Sendable, Codable, Equatable {
    public var pairs: Int
    public var loss: Double
    /// Fraction of pairs whose chosen reply has the higher implicit reward (ties count half).
    public var accuracy: Double
    /// Mean implicit reward margin.
    public var margin: Double
    public var chosenReward: Double
    public var rejectedReward: Double
}

/// Trains the adapters on preference pairs with the DPO loss.
///
/// Each micro-batch lays the chosen and the rejected sequences as rows of one batch. The
/// reference log-probabilities are computed once, first, with the adapters switched off and
/// without saving anything for backward; the policy's come from a training forward with the
/// adapters on. The fused cross-entropy gives each sequence's log-probability and its gradient
/// in one pass of the head; the loss's derivative w.r.t. each sequence's log-probability scales
/// that sequence's rows, and `Decoder.backward` carries the result into the adapters.
public final class DPOTrainer: @unchecked Sendable {
    public let decoder: Decoder
    /// The adapters that train (the reference is the decoder without them).
    public let parameters: TrainableParameters
    public let configuration: TrainingConfiguration
    /// DPO's β: how far the policy may move from the reference.
    public let beta: Double
    public let padTokenID: Int32
    public internal(set) var step = 0
    var sampler: EpochSampler<TokenizedPair>
    let update: PhaseUpdate
    var random: SplitMix64

    /// A trainer at step 0; each step draws `microBatch × gradientAccumulation` pairs.
    /// - Throws: `FrugalError.invalidArgument` when the backend cannot train, there are no pairs,
    ///   or the method is not LoRA (the reference is the base without adapters).
    public init(decoder: Decoder, parameters: TrainableParameters, configuration: TrainingConfiguration,
                pairs: [TokenizedPair], beta: Double = 0.1, padTokenID: Int32 = 0) throws {
        let backend = try decoder.trainingBackend()
        guard case .lora = configuration.method else {
            throw FrugalError.invalidArgument("DPO here trains LoRA adapters: the reference is the base model with them switched off")
        }
        guard !pairs.isEmpty else { throw FrugalError.invalidArgument("no preference pairs to train on") }
        guard beta > 0 else { throw FrugalError.invalidArgument("DPO's beta must be positive, not \(beta)") }
        self.decoder = decoder
        self.parameters = parameters
        self.configuration = configuration
        self.beta = beta
        self.padTokenID = padTokenID
        sampler = EpochSampler(pairs, seed: configuration.seed)
        let dtype = configuration.precision.trainableDType
        update = PhaseUpdate([("policy", parameters)], configuration: configuration, backend: backend,
                             totalUpdates: configuration.steps,
                             storeComputeCopies: ["policy": { decoder.storeTrainable(parameters, at: $0, as: dtype) }])
        random = SplitMix64(seed: configuration.seed ^ 0x5EED)
    }

    public var isFinished: Bool { step >= configuration.steps }

    /// Summed log-probabilities of each row's reply under the base model (adapters off), without
    /// gradients.
    public func referenceLogProbabilities(_ sequences: SequenceBatch) -> [Double] {
        decoder.setAdaptersEnabled(false)
        defer { decoder.setAdaptersEnabled(true) }
        return policyLogProbabilities(sequences)
    }

    /// Summed log-probabilities of each row's reply under the decoder as it is, without gradients.
    public func policyLogProbabilities(_ sequences: SequenceBatch) -> [Double] {
        LogProbabilities.perSequence(sequences.hiddenStates(decoder), head: decoder.weights.head, sequences,
                                     backend: update.backend)
    }

    /// Runs one optimizer step over `microBatch × gradientAccumulation` pairs.
    /// - Throws: `FrugalError.numericalFault` as `PhaseUpdate.apply` does.
    public func trainStep() throws -> PhaseEvent {
        let started = ContinuousClock.now
        update.timer.start()
        let count = configuration.microBatch * configuration.gradientAccumulation
        update.zeroGradients()
        var totals = DPOEvaluation(pairs: count, loss: 0, accuracy: 0, margin: 0, chosenReward: 0, rejectedReward: 0)
        var tokens = 0, targets = 0
        for _ in 0..<configuration.gradientAccumulation {
            let pairs = sampler.next(configuration.microBatch)
            for pair in pairs {
                tokens += pair.chosen.tokens.count + pair.rejected.tokens.count
                targets += pair.chosen.targetTokenCount + pair.rejected.targetTokenCount
            }
            accumulateGradients(pairs, scale: Double(update.lossScale) / Double(count), into: &totals)
        }
        step += 1
        totals.average()
        guard let (rate, norm) = try update.apply(loss: totals.loss, step: step) else {
            return .skippedStep(step: step, newLossScale: update.scaler.scale)
        }
        let metrics = update.metrics(step: step, totalSteps: configuration.steps, loss: totals.loss, rate: rate, norm: norm,
                                     tokens: tokens, targetTokens: targets, since: started, epoch: sampler.epoch)
        return .step(metrics, figures: totals.figures)
    }

    /// Reference, forward and backward of one micro-batch, adding the gradients of
    /// `scale · Σ_pairs loss` (+=) and the pairs' figures (sums) into `totals`.
    func accumulateGradients(_ pairs: [TokenizedPair], scale: Double, into totals: inout DPOEvaluation) {
        let backend = update.backend, n = pairs.count
        let sequences = SequenceBatch(pairs.map(\.chosen) + pairs.map(\.rejected), padTokenID: padTokenID)
        let reference = referenceLogProbabilities(sequences)
        let pass = decoder.forwardForTraining(sequences.batch, training: parameters, options: configuration.passOptions(), random: &random)
        // One pass of the head gives each sequence's log-probability and its gradient; the
        // loss's coefficient of each sequence then scales that sequence's rows.
        let dHidden = backend.zeros(pass.hidden.shape, .f32, .activations)
        let policy = LogProbabilities.perSequence(pass.hidden, head: decoder.weights.head, sequences, backend: backend,
                                                  dHidden: dHidden)
        for i in 0..<n {
            let pair = DPOLoss(policyChosen: policy[i], policyRejected: policy[n + i], referenceChosen: reference[i],
                               referenceRejected: reference[n + i], beta: beta)
            totals.add(pair)
            let d = Float(pair.dPolicyChosen * scale)
            backend.scale(dHidden.rows(sequences.positions(of: i)), by: d)
            backend.scale(dHidden.rows(sequences.positions(of: n + i)), by: -d)
        }
        update.timer.mark(.forward)
        decoder.backward(consume dHidden, consume pass, into: parameters)
        update.timer.mark(.backward)
    }

    /// Loss, preference accuracy and reward margins on `pairs` (held-out), without gradients.
    public func evaluate(_ pairs: [TokenizedPair], batchSize: Int = 8) -> DPOEvaluation {
        var totals = DPOEvaluation(pairs: pairs.count, loss: 0, accuracy: 0, margin: 0, chosenReward: 0, rejectedReward: 0)
        for start in stride(from: 0, to: pairs.count, by: max(batchSize, 1)) {
            let group = pairs[start..<min(start + max(batchSize, 1), pairs.count)]
            let n = group.count
            let sequences = SequenceBatch(group.map(\.chosen) + group.map(\.rejected), padTokenID: padTokenID)
            let reference = referenceLogProbabilities(sequences), policy = policyLogProbabilities(sequences)
            for i in 0..<n {
                totals.add(DPOLoss(policyChosen: policy[i], policyRejected: policy[n + i], referenceChosen: reference[i],
                                   referenceRejected: reference[n + i], beta: beta))
            }
        }
        totals.average()
        return totals
    }
}

extension DPOEvaluation {
    /// Adds one pair's figures (sums, until `average`).
    mutating func add(_ pair: DPOLoss) {
        loss += pair.loss
        accuracy += RewardModelTrainer.score(pair.chosenReward, pair.rejectedReward)
        margin += pair.margin
        chosenReward += pair.chosenReward
        rejectedReward += pair.rejectedReward
    }

    /// Turns the sums into means over `pairs`.
    mutating func average() {
        let n = Double(max(pairs, 1))
        loss /= n; accuracy /= n; margin /= n; chosenReward /= n; rejectedReward /= n
    }

    /// The figures by name, as events carry them.
    public var figures: [String: Double] {
        ["accuracy": accuracy, "margin": margin, "chosen_reward": chosenReward, "rejected_reward": rejectedReward]
    }
}
