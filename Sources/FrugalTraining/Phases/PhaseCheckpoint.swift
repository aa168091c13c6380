// PhaseCheckpoint: what a checkpoint holds of the reward, DPO and PPO trainers — their update's
// tensors under each trainable set's name, and one scalar state shared by the three.
import FrugalCore
import FrugalModels

/// The scalar state of a reward, DPO or PPO trainer, beside its tensors.
public struct PhaseTrainerState: Codable {
    var step: Int
    /// Updates attempted (applied or skipped), for the schedule.
    var updates: Int
    /// Updates each optimizer applied (AdamW's bias correction), one per trainable set.
    var optimizerUpdates: [Int]
    /// The dropout stream (reward, DPO) or the rollouts' sampling stream (PPO).
    var random: SplitMix64
    /// Where the pairs (reward, DPO) or prompts (PPO) are.
    var sampler: EpochSamplerState
    var scaler: LossScaler
    var configuration: TrainingConfiguration
    /// DPO's β, recorded as the configuration is.
    var beta: Double?
    /// PPO's settings, recorded as the configuration is.
    var ppo: PPOSettings?
}

/// A reward, DPO or PPO trainer, as its checkpoints see it.
protocol PhaseTrainer: Checkpointable where CheckpointState == PhaseTrainerState {
    associatedtype Item
    var step: Int { get set }
    var sampler: EpochSampler<Item> { get set }
    var random: SplitMix64 { get set }
    var update: PhaseUpdate { get }
    var configuration: TrainingConfiguration { get }
}

extension PhaseTrainer {
    /// The scalar state now, with the phase's own settings.
    func phaseState(beta: Double? = nil, ppo: PPOSettings? = nil) -> PhaseTrainerState {
        PhaseTrainerState(step: step, updates: update.updates, optimizerUpdates: update.optimizers.map(\.updates),
                          random: random, sampler: sampler.state, scaler: update.scaler, configuration: configuration,
                          beta: beta, ppo: ppo)
    }

    /// Sets the scalar state.
    /// - Throws: `FrugalError.invalidArgument` when the data or the trainable sets differ, before
    ///   changing anything.
    func restorePhase(_ state: PhaseTrainerState) throws {
        guard state.optimizerUpdates.count == update.optimizers.count else {
            throw FrugalError.invalidArgument("a checkpoint of \(state.optimizerUpdates.count) trainable sets, not \(update.optimizers.count)")
        }
        var sampler = self.sampler
        try sampler.resume(from: state.sampler)
        self.sampler = sampler
        step = state.step
        random = state.random
        update.updates = state.updates
        update.scaler = state.scaler
        for (optimizer, updates) in zip(update.optimizers, state.optimizerUpdates) { optimizer.updates = updates }
    }
}

extension RewardModelTrainer: PhaseTrainer {}

extension RewardModelTrainer: Checkpointable {
    public static let checkpointPhase = "reward"
    /// The backend the trainer computes on.
    public var backend: TrainingBackend { update.backend }
    /// The optimizers' tensors under `model/` and `head/`.
    public var checkpointTensors: [(String, Tensor)] { update.stateTensors }
    public var checkpointState: PhaseTrainerState { phaseState() }
    public func restore(_ state: PhaseTrainerState) throws { try restorePhase(state) }
}

extension DPOTrainer: PhaseTrainer {}

extension DPOTrainer: Checkpointable {
    public static let checkpointPhase = "dpo"
    /// The backend the trainer computes on.
    public var backend: TrainingBackend { update.backend }
    /// The optimizer's tensors under `policy/`.
    public var checkpointTensors: [(String, Tensor)] { update.stateTensors }
    public var checkpointState: PhaseTrainerState { phaseState(beta: beta) }
    public func restore(_ state: PhaseTrainerState) throws { try restorePhase(state) }
}

extension PPOTrainer: PhaseTrainer {}

extension PPOTrainer: Checkpointable {
    public static let checkpointPhase = "ppo"
    /// The backend the trainer computes on.
    public var backend: TrainingBackend { update.backend }
    /// The optimizers' tensors under `actor/` and `critic/` (the reward model is read from its
    /// own folder and does not train).
    public var checkpointTensors: [(String, Tensor)] { update.stateTensors }
    public var checkpointState: PhaseTrainerState { phaseState(ppo: settings) }
    public func restore(_ state: PhaseTrainerState) throws { try restorePhase(state) }
}
