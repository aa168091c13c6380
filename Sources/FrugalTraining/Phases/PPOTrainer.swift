// PPOTrainer: phase 3 of DeepSpeed-Chat — RLHF with PPO (Schulman et al., 2017,
// arXiv:1707.06347; Ouyang et al., 2022): rollouts with the KV cache by the weights that train,
// a per-token KL penalty against the adapter-free base, GAE, clipped policy and value losses.
import Foundation
import FrugalCore
import FrugalModels

/// PPO's settings; defaults after DeepSpeed-Chat and TRL, sized for short runs.
public struct PPOSettings: Sendable, Codable, Equatable {
    /// Prompts per rollout batch (one `trainStep`).
    public var rollouts = 4
    /// Most tokens of a reply.
    public var maxNewTokens = 32
    /// Sampling temperature of the rollouts (1 samples the policy itself).
    public var temperature: Float = 1
    /// Tokens that end a reply (EOS, end of turn); the stop token is part of the reply.
    public var stopTokens: Set<Int32> = []
    /// Optimizer updates over each rollout batch.
    public var epochs = 2
    /// β of the per-token penalty `−β·(log π − log π_ref)`.
    public var klCoefficient = 0.05
    /// ε of the clipped ratio.
    public var clipRange = 0.2
    /// How far a new value may move from the rollout's value before the clipped loss holds it.
    public var valueClipRange = 0.2
    /// Weight of the value loss in the loss that trains the shared trunk.
    public var valueCoefficient = 0.1
    /// Discount and GAE's λ.
    public var gamma = 1.0
    public var lambda = 0.95
    /// Scores are clipped to ±this.
    public var rewardClip = 5.0

    public init() {}
}

/// Figures of the policy on held-out prompts.
public struct PPOEvaluation: Sendable, Codable, Equatable {
    public var prompts: Int
    /// Mean reward-model score of the replies.
    public var reward: Double
    /// Mean over replies of `Σ_t (log π − log π_ref)` of the sampled tokens.
    public var kl: Double
    /// Mean reply length in tokens.
    public var length: Double
}

/// One rollout: a prompt, the sampled reply, and what PPO needs of each reply token.
struct Rollout {
    let sequence: TokenizedExample
    /// Positions of the sequence that predict a reply token.
    let positions: [Int]
    var score = 0.0
    /// Per position of `positions`.
    var oldLogProbabilities: [Double] = []
    var referenceLogProbabilities: [Double] = []
    var values: [Double] = []
    var advantages: [Double] = []
    var returns: [Double] = []

    init(prompt: [Int32], reply: [Int32]) {
        let sequence = TokenizedExample(tokens: prompt + reply, trained: Array(repeating: false, count: prompt.count)
                                            + Array(repeating: true, count: reply.count))
        self.sequence = sequence
        positions = sequence.targets.indices.filter { sequence.targets[$0] >= 0 }
    }

    /// `Σ_t (log π_old − log π_ref)` over the reply.
    var kl: Double { zip(oldLogProbabilities, referenceLogProbabilities).reduce(0) { $0 + $1.0 - $1.1 } }
}

/// Trains the policy's LoRA adapters with PPO against a reward model.
///
/// - **Actor**: the decoder with its adapters. **Critic**: a `ValueHead` of its own on the
///   actor's trunk (the hidden states are shared, as in one actor-critic network; the value
///   loss, weighted by `valueCoefficient`, trains the adapters too). **Reference**: the same
///   decoder with the adapters switched off. **Reward model**: `SharedBaseRewardModel`, the
///   reward phase's adapters swapped into the same base. So the base weights exist once.
/// - A step samples `rollouts` prompts, generates each reply token by token with a KV cache
///   by the actor's current weights (no copy between a training and an inference model), then
///   without gradients computes the replies' log-probabilities under actor and reference,
///   the critic's values and the reward model's scores. The reward of each reply token is
///   `−β·(log π − log π_ref)`, plus the clipped score on the last; GAE gives advantages
///   (whitened over the batch) and returns. Then `epochs` updates each minimize, averaged over
///   the reply tokens, `max(−A·ρ, −A·clip(ρ, 1±ε)) + c_v · ½·max((V − R)², (clip(V) − R)²)`.
public final class PPOTrainer: @unchecked Sendable {
    public let decoder: Decoder
    /// The actor's adapters.
    public let parameters: TrainableParameters
    public let critic: ValueHead
    public let rewardModel: SharedBaseRewardModel
    public let configuration: TrainingConfiguration
    public let settings: PPOSettings
    public let padTokenID: Int32
    /// Rollout batches done so far.
    public internal(set) var step = 0
    var sampler: EpochSampler<[Int32]>
    let update: PhaseUpdate
    var random: SplitMix64

    /// A trainer at step 0; `configuration.steps` rollout batches, each of `settings.epochs`
    /// updates over micro-batches of `configuration.microBatch` replies.
    /// - Throws: `FrugalError.invalidArgument` when the backend cannot train, there are no
    ///   prompts, or the method is not LoRA.
    public init(decoder: Decoder, parameters: TrainableParameters, critic: ValueHead, rewardModel: SharedBaseRewardModel,
                configuration: TrainingConfiguration, settings: PPOSettings, prompts: [[Int32]], padTokenID: Int32 = 0) throws {
        let backend = try decoder.trainingBackend()
        guard case .lora = configuration.method else {
            throw FrugalError.invalidArgument("PPO here trains LoRA adapters: the reference is the base model with them switched off")
        }
        guard !prompts.isEmpty, prompts.allSatisfy({ !$0.isEmpty }) else {
            throw FrugalError.invalidArgument("PPO needs prompts, none of them empty")
        }
        guard settings.rollouts > 0, settings.epochs > 0, settings.maxNewTokens > 0 else {
            throw FrugalError.invalidArgument("PPO's rollouts, epochs and new tokens must be positive")
        }
        self.decoder = decoder
        self.parameters = parameters
        self.critic = critic
        self.rewardModel = rewardModel
        self.configuration = configuration
        self.settings = settings
        self.padTokenID = padTokenID
        sampler = EpochSampler(prompts, seed: configuration.seed)
        let dtype = configuration.precision.trainableDType
        update = PhaseUpdate([("actor", parameters), ("critic", critic.parameters)], configuration: configuration, backend: backend,
                             totalUpdates: configuration.steps * settings.epochs,
                             storeComputeCopies: ["actor": { decoder.storeTrainable(parameters, at: $0, as: dtype) },
                                                  "critic": { _ in critic.storeTrainable(as: dtype) }])
        random = SplitMix64(seed: configuration.seed ^ 0x5A3B1E)
    }

    public var isFinished: Bool { step >= configuration.steps }

    // MARK: - Losses

    /// GAE over one reply: `δ_t = r_t + γ·V_{t+1} − V_t` (V after the last token is 0),
    /// `A_t = δ_t + γλ·A_{t+1}`; returns are `A_t + V_t`.
    public static func advantages(rewards: [Double], values: [Double], gamma: Double,
                                  lambda: Double) -> (advantages: [Double], returns: [Double]) {
        precondition(rewards.count == values.count, "one value per reward")
        var advantages = [Double](repeating: 0, count: rewards.count)
        var next = 0.0, nextValue = 0.0
        for t in rewards.indices.reversed() {
            next = rewards[t] + gamma * nextValue - values[t] + gamma * lambda * next
            advantages[t] = next
            nextValue = values[t]
        }
        return (advantages, zip(advantages, values).map(+))
    }

    /// The clipped policy loss of one token, `max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε))` with
    /// `ρ = exp(logp − old)`, and its derivative w.r.t. `logp` (0 where the clipped term holds).
    public static func policyLoss(logProbability: Double, old: Double, advantage: Double,
                                  clip: Double) -> (loss: Double, dLogProbability: Double) {
        let ratio = exp(logProbability - old)
        let unclipped = -advantage * ratio, clipped = -advantage * min(max(ratio, 1 - clip), 1 + clip)
        return unclipped >= clipped ? (unclipped, unclipped) : (clipped, 0)
    }

    /// The clipped value loss of one token, `½·max((V − R)², (clip(V, V_old ± c) − R)²)`, and its
    /// derivative w.r.t. `V`.
    public static func valueLoss(value: Double, old: Double, target: Double, clip: Double) -> (loss: Double, dValue: Double) {
        let clippedValue = min(max(value, old - clip), old + clip)
        let unclipped = 0.5 * (value - target) * (value - target)
        let clipped = 0.5 * (clippedValue - target) * (clippedValue - target)
        return unclipped >= clipped ? (unclipped, value - target) : (clipped, 0)
    }

    // MARK: - Steps

    /// One rollout batch and `settings.epochs` updates over it.
    /// - Throws: `FrugalError.numericalFault` as `PhaseUpdate.apply` does.
    public func trainStep() throws -> PhaseEvent {
        let started = ContinuousClock.now
        update.timer.start()
        var rollouts = sampler.next(settings.rollouts).map { generate($0, random: &random) }
        let rolloutSeconds = (ContinuousClock.now - started).inSeconds
        score(&rollouts)
        update.timer.mark(.rollout)
        let tokens = rollouts.reduce(0) { $0 + $1.sequence.tokens.count }
        let replyTokens = rollouts.reduce(0) { $0 + $1.positions.count }
        var figures: [String: Double] = [
            "reward": rollouts.reduce(0) { $0 + $1.score } / Double(rollouts.count),
            "kl": rollouts.reduce(0) { $0 + $1.kl } / Double(rollouts.count),
            "length": Double(replyTokens) / Double(rollouts.count),
            "rollout_seconds": rolloutSeconds,
        ]
        step += 1
        var loss = 0.0, last: (rate: Float, norm: Double)?
        for _ in 0..<settings.epochs {
            update.zeroGradients()
            var totals = [String: Double]()
            for start in stride(from: 0, to: rollouts.count, by: max(configuration.microBatch, 1)) {
                let micro = Array(rollouts[start..<min(start + max(configuration.microBatch, 1), rollouts.count)])
                accumulateGradients(micro, scale: Double(update.lossScale) / Double(replyTokens), into: &totals)
            }
            let epochLoss = (totals["policy_loss", default: 0] + settings.valueCoefficient * totals["value_loss", default: 0])
                / Double(replyTokens)
            loss += epochLoss / Double(settings.epochs)
            for (key, value) in totals { figures[key, default: 0] += value / Double(replyTokens * settings.epochs) }
            guard let applied = try update.apply(loss: epochLoss, step: step) else {
                return .skippedStep(step: step, newLossScale: update.scaler.scale)
            }
            last = applied
        }
        let metrics = update.metrics(step: step, totalSteps: configuration.steps, loss: loss, rate: last!.rate,
                                     norm: last!.norm, tokens: tokens, targetTokens: replyTokens,
                                     since: started, epoch: sampler.epoch)
        return .step(metrics, figures: figures)
    }

    /// Mean reward, KL and reply length on `prompts`, the replies sampled from a stream seeded
    /// by `seed` (the same seed gives the same draws, so evaluations differ by the policy only).
    public func evaluate(_ prompts: [[Int32]], seed: UInt64 = 0) -> PPOEvaluation {
        var stream = SplitMix64(seed: seed)
        var rollouts = prompts.map { generate($0, random: &stream) }
        score(&rollouts)
        let n = Double(max(prompts.count, 1))
        return PPOEvaluation(prompts: prompts.count, reward: rollouts.reduce(0) { $0 + $1.score } / n,
                             kl: rollouts.reduce(0) { $0 + $1.kl } / n,
                             length: Double(rollouts.reduce(0) { $0 + $1.positions.count }) / n)
    }

    /// Samples a reply to `prompt` with the KV cache, by the adapters as they are now.
    func generate(_ prompt: [Int32], random: inout SplitMix64) -> Rollout {
        let capacity = min(decoder.configuration.maxPositions, prompt.count + settings.maxNewTokens)
        precondition(prompt.count < capacity, "a prompt of \(prompt.count) tokens leaves no room for a reply")
        let cache = KVCache(backend: decoder.backend, configuration: decoder.configuration, capacity: capacity)
        var logits = decoder.backend.download(decoder.logits(prompt, cache: cache, lastOnly: true))
        var reply: [Int32] = []
        while true {
            let token = Self.sample(logits, temperature: settings.temperature, random: &random)
            reply.append(token)
            if settings.stopTokens.contains(token) || reply.count >= settings.maxNewTokens || cache.length >= capacity { break }
            logits = decoder.backend.download(decoder.logits([token], cache: cache, lastOnly: true))
        }
        return Rollout(prompt: prompt, reply: reply)
    }

    /// A token drawn from `softmax(logits / temperature)` (the most likely at temperature 0).
    static func sample(_ logits: [Float], temperature: Float, random: inout SplitMix64) -> Int32 {
        guard temperature > 0 else { return Int32(logits.indices.max { logits[$0] < logits[$1] }!) }
        let maximum = logits.max()!
        let weights = logits.map { exp(Double(($0 - maximum) / temperature)) }
        var threshold = Double(random.nextUniform()) * weights.reduce(0, +)
        for (token, weight) in weights.enumerated() {
            threshold -= weight
            if threshold < 0 { return Int32(token) }
        }
        return Int32(weights.lastIndex { $0 > 0 }!)
    }

    /// Fills each rollout's log-probabilities (actor and reference), values, score, per-token
    /// rewards' advantages (whitened over the batch) and returns — all without gradients.
    func score(_ rollouts: inout [Rollout]) {
        let backend = update.backend, head = decoder.weights.head
        let batch = SequenceBatch(rollouts.map(\.sequence), padTokenID: padTokenID)
        let targets = batch.batch.targets
        func perRollout<T>(_ values: [T]) -> [[T]] {
            rollouts.indices.map { i in rollouts[i].positions.map { values[i * batch.length + $0] } }
        }
        let hidden = batch.hiddenStates(decoder)
        let old = perRollout(LogProbabilities.perToken(hidden, head: head, targets: targets, backend: backend))
        let values = perRollout(critic.values(hidden).map(Double.init))
        decoder.setAdaptersEnabled(false)
        let reference = perRollout(LogProbabilities.perToken(batch.hiddenStates(decoder), head: head, targets: targets,
                                                             backend: backend))
        decoder.setAdaptersEnabled(true)
        let scores = rewardModel.scores(rollouts.map(\.sequence), padTokenID: padTokenID)
        for i in rollouts.indices {
            rollouts[i].oldLogProbabilities = old[i]
            rollouts[i].referenceLogProbabilities = reference[i]
            rollouts[i].values = values[i]
            rollouts[i].score = Double(scores[i])
            var rewards = zip(old[i], reference[i]).map { -settings.klCoefficient * ($0 - $1) }
            rewards[rewards.count - 1] += min(max(Double(scores[i]), -settings.rewardClip), settings.rewardClip)
            (rollouts[i].advantages, rollouts[i].returns) = Self.advantages(rewards: rewards, values: values[i],
                                                                          gamma: settings.gamma, lambda: settings.lambda)
        }
        // Whiten the advantages over the batch.
        let all = rollouts.flatMap(\.advantages)
        let mean = all.reduce(0, +) / Double(all.count)
        let deviation = (all.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(all.count)).squareRoot()
        for i in rollouts.indices { rollouts[i].advantages = rollouts[i].advantages.map { ($0 - mean) / (deviation + 1e-8) } }
    }

    /// Forward and backward of one micro-batch of rollouts, adding the gradients of
    /// `scale · Σ_tokens (policy loss + c_v · value loss)` (+=) and the sums of the figures
    /// (`policy_loss`, `value_loss`, `clip_fraction`, `approx_kl`) into `totals`.
    func accumulateGradients(_ rollouts: [Rollout], scale: Double, into totals: inout [String: Double]) {
        let backend = update.backend
        let batch = SequenceBatch(rollouts.map(\.sequence), padTokenID: padTokenID)
        // Where each reply token's figures are: flattened position → (rollout, index).
        var place = [Int: (Int, Int)]()
        for (i, rollout) in rollouts.enumerated() {
            for (k, position) in rollout.positions.enumerated() { place[i * batch.length + position] = (i, k) }
        }
        let pass = decoder.forwardForTraining(batch.batch, training: parameters, options: configuration.passOptions(training: false), random: &random)
        var policyLoss = 0.0, clipped = 0.0, approximateKL = 0.0
        let dHidden = backend.zeros(pass.hidden.shape, .f32, .activations)
        _ = LogProbabilities.perToken(pass.hidden, head: decoder.weights.head, targets: batch.batch.targets, backend: backend,
                                      dHidden: dHidden, dHead: parameters.gradient(of: decoder.weights.head)) { position, logp in
            let (i, k) = place[position]!
            let old = rollouts[i].oldLogProbabilities[k]
            let (loss, d) = Self.policyLoss(logProbability: logp, old: old, advantage: rollouts[i].advantages[k],
                                            clip: settings.clipRange)
            policyLoss += loss
            if d == 0 { clipped += 1 }
            approximateKL += old - logp
            return Float(d * scale)
        }
        let values = critic.values(pass.hidden)
        var dValues = [Float](repeating: 0, count: values.count)
        var valueLoss = 0.0
        // In rollout order, so that the sum is the same in every process (a dictionary's order is not).
        for (i, rollout) in rollouts.enumerated() {
            for (k, row) in rollout.positions.enumerated() {
                let position = i * batch.length + row
                let (loss, d) = Self.valueLoss(value: Double(values[position]), old: rollout.values[k],
                                               target: rollout.returns[k], clip: settings.valueClipRange)
                valueLoss += loss
                dValues[position] = Float(settings.valueCoefficient * d * scale)
            }
        }
        update.timer.mark(.forward)
        let dFromCritic = backend.zeros(pass.hidden.shape, .f32, .activations)
        critic.backward(dValues: dValues, hidden: pass.hidden, dHidden: dFromCritic)
        backend.add(dHidden, dHidden, dFromCritic)
        decoder.backward(consume dHidden, consume pass, into: parameters)
        update.timer.mark(.backward)
        totals["policy_loss", default: 0] += policyLoss
        totals["value_loss", default: 0] += valueLoss
        totals["clip_fraction", default: 0] += clipped
        totals["approx_kl", default: 0] += approximateKL
    }
}
