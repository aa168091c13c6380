// RewardModelTrainer: phase 2 of DeepSpeed-Chat — a scalar head on the (LoRA-adapted) decoder
// trained on preference pairs with the pairwise loss −log σ(r_chosen − r_rejected).
import Foundation
import FrugalCore
import FrugalModels

/// Figures of a pairwise evaluation on held-out pairs.
public struct PairwiseEvaluation: Sendable, Codable, Equatable {
    /// Pairs evaluated.
    public var pairs: Int
    /// Fraction of pairs whose chosen reply scores higher (ties count half).
    public var accuracy: Double
    /// Mean pairwise loss.
    public var loss: Double
    /// Mean score difference chosen − rejected.
    public var margin: Double
}

/// Trains a reward model: the decoder's final hidden state at each sequence's last token (the
/// reply's end-of-turn marker) goes through a `ValueHead` to a score, and the pair's loss is
/// `−log σ(r_chosen − r_rejected)`, averaged over the pairs of a step.
///
/// Backward: the loss's gradient w.r.t. each score goes through the head's linear backward to
/// the hidden state of that sequence's last row only, then through `Decoder.backward` into the
/// adapters (or weights) of `parameters`.
public final class RewardModelTrainer: @unchecked Sendable {
    public let decoder: Decoder
    /// What trains in the decoder (LoRA adapters, or every weight).
    public let parameters: TrainableParameters
    public let head: ValueHead
    public let configuration: TrainingConfiguration
    /// Token written into padding.
    public let padTokenID: Int32
    /// Optimizer steps attempted so far.
    public internal(set) var step = 0
    var sampler: EpochSampler<TokenizedPair>
    let update: PhaseUpdate
    var random: SplitMix64

    /// A trainer at step 0; each step draws `microBatch × gradientAccumulation` pairs.
    /// - Throws: `FrugalError.invalidArgument` when the backend cannot train or there are no pairs.
    public init(decoder: Decoder, parameters: TrainableParameters, head: ValueHead, configuration: TrainingConfiguration,
                pairs: [TokenizedPair], padTokenID: Int32 = 0) throws {
        let backend = try decoder.trainingBackend()
        guard !pairs.isEmpty else { throw FrugalError.invalidArgument("no preference pairs to train on") }
        self.decoder = decoder
        self.parameters = parameters
        self.head = head
        self.configuration = configuration
        self.padTokenID = padTokenID
        sampler = EpochSampler(pairs, seed: configuration.seed)
        let dtype = configuration.precision.trainableDType
        update = PhaseUpdate([("model", parameters), ("head", head.parameters)], configuration: configuration, backend: backend,
                             totalUpdates: configuration.steps,
                             storeComputeCopies: ["model": { decoder.storeTrainable(parameters, at: $0, as: dtype) },
                                                  "head": { _ in head.storeTrainable(as: dtype) }])
        random = SplitMix64(seed: configuration.seed ^ 0x5EED)
    }

    public var isFinished: Bool { step >= configuration.steps }

    /// The pairwise loss of one pair and its derivative w.r.t. the chosen score (the rejected
    /// score's is its negative).
    public static func pairwiseLoss(chosen: Double, rejected: Double) -> (loss: Double, dChosen: Double) {
        let difference = chosen - rejected
        return (-PhaseMath.logSigmoid(difference), -PhaseMath.sigmoid(-difference))
    }

    /// Runs one optimizer step over `microBatch × gradientAccumulation` pairs.
    /// - Throws: `FrugalError.numericalFault` as `PhaseUpdate.apply` does.
    public func trainStep() throws -> PhaseEvent {
        let started = ContinuousClock.now
        update.timer.start()
        let count = configuration.microBatch * configuration.gradientAccumulation
        update.zeroGradients()
        var totals = PairwiseEvaluation(pairs: count, accuracy: 0, loss: 0, margin: 0)
        var tokens = 0
        for _ in 0..<configuration.gradientAccumulation {
            let pairs = sampler.next(configuration.microBatch)
            tokens += pairs.reduce(0) { $0 + $1.chosen.tokens.count + $1.rejected.tokens.count }
            accumulateGradients(pairs, scale: Double(update.lossScale) / Double(count), into: &totals)
        }
        step += 1
        totals.average()
        guard let (rate, norm) = try update.apply(loss: totals.loss, step: step) else {
            return .skippedStep(step: step, newLossScale: update.scaler.scale)
        }
        let metrics = update.metrics(step: step, totalSteps: configuration.steps, loss: totals.loss, rate: rate, norm: norm,
                                     tokens: tokens, targetTokens: 2 * count, since: started, epoch: sampler.epoch)
        return .step(metrics, figures: ["accuracy": totals.accuracy, "margin": totals.margin])
    }

    /// Forward and backward of one micro-batch, adding the gradients of `scale · Σ_pairs loss`
    /// (+=) and the pairs' figures (sums) into `totals`.
    func accumulateGradients(_ pairs: [TokenizedPair], scale: Double, into totals: inout PairwiseEvaluation) {
        let sequences = SequenceBatch(pairs.map(\.chosen) + pairs.map(\.rejected), padTokenID: padTokenID)
        let pass = decoder.forwardForTraining(sequences.batch, training: parameters, options: configuration.passOptions(), random: &random)
        let values = head.values(pass.hidden)
        // ∂loss/∂score at each sequence's last position; zero elsewhere.
        var dValues = [Float](repeating: 0, count: values.count)
        for i in pairs.indices {
            let c = sequences.lastPosition(of: i), r = sequences.lastPosition(of: i + pairs.count)
            totals.add(chosen: Double(values[c]), rejected: Double(values[r]))
            let d = Self.pairwiseLoss(chosen: Double(values[c]), rejected: Double(values[r])).dChosen * scale
            dValues[c] = Float(d)
            dValues[r] = Float(-d)
        }
        update.timer.mark(.forward)
        let dHidden = update.backend.zeros(pass.hidden.shape, .f32, .activations)
        head.backward(dValues: dValues, hidden: pass.hidden, dHidden: dHidden)
        decoder.backward(consume dHidden, consume pass, into: parameters)
        update.timer.mark(.backward)
    }

    /// 1 when the chosen score is higher, ½ on a tie, else 0.
    static func score(_ chosen: Double, _ rejected: Double) -> Double {
        chosen > rejected ? 1 : chosen == rejected ? 0.5 : 0
    }

    /// The score of each sequence: the head at its last token (adapters as they are, no dropout,
    /// no gradients).
    public func scores(_ sequences: [TokenizedExample], batchSize: Int = 8) -> [Float] {
        Self.scores(sequences, decoder: decoder, head: head, padTokenID: padTokenID, batchSize: batchSize)
    }

    /// The score of each sequence under `decoder` and `head`, `batchSize` sequences at a time.
    static func scores(_ sequences: [TokenizedExample], decoder: Decoder, head: ValueHead, padTokenID: Int32,
                       batchSize: Int) -> [Float] {
        stride(from: 0, to: sequences.count, by: max(batchSize, 1)).flatMap { start in
            let batch = SequenceBatch(Array(sequences[start..<min(start + max(batchSize, 1), sequences.count)]),
                                      padTokenID: padTokenID)
            let values = head.values(batch.hiddenStates(decoder))
            return (0..<batch.rows).map { values[batch.lastPosition(of: $0)] }
        }
    }

    /// Pairwise accuracy, loss and margin on `pairs` (held-out), without gradients.
    public func evaluate(_ pairs: [TokenizedPair], batchSize: Int = 8) -> PairwiseEvaluation {
        let chosen = scores(pairs.map(\.chosen), batchSize: batchSize)
        let rejected = scores(pairs.map(\.rejected), batchSize: batchSize)
        var evaluation = PairwiseEvaluation(pairs: pairs.count, accuracy: 0, loss: 0, margin: 0)
        for (c, r) in zip(chosen, rejected) { evaluation.add(chosen: Double(c), rejected: Double(r)) }
        evaluation.average()
        return evaluation
    }
}

extension PairwiseEvaluation {
    /// Adds one pair's figures (sums, until `average`).
    mutating func add(chosen: Double, rejected: Double) {
        accuracy += RewardModelTrainer.score(chosen, rejected)
        loss += RewardModelTrainer.pairwiseLoss(chosen: chosen, rejected: rejected).loss
        margin += chosen - rejected
    }

    /// Turns the sums into means over `pairs`.
    mutating func average() {
        let n = Double(max(pairs, 1))
        accuracy /= n; loss /= n; margin /= n
    }
}
