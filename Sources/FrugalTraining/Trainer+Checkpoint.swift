// Trainer+Checkpoint: what a checkpoint holds of the SFT trainer.
import FrugalCore
import FrugalModels

/// The scalar state of the SFT trainer, beside its tensors.
public struct TrainerState: Codable {
    var step: Int
    var updates: Int
    var random: SplitMix64
    var loader: DataLoaderState
    var scaler: LossScaler
    var configuration: TrainingConfiguration
}

extension Trainer: Checkpointable {
    public static let checkpointPhase = "sft"

    /// The optimizer's tensors under the parameters' own names.
    public var checkpointTensors: [(String, Tensor)] { optimizer.stateTensors }

    public var checkpointState: TrainerState {
        TrainerState(step: step, updates: optimizer.updates, random: random, loader: loader.state, scaler: scaler,
                     configuration: configuration)
    }

    /// - Throws: `FrugalError.invalidArgument` when the data position does not fit the loader.
    public func restore(_ state: TrainerState) throws {
        var loader = self.loader
        try loader.resume(from: state.loader)
        self.loader = loader
        step = state.step
        optimizer.updates = state.updates
        random = state.random
        scaler = state.scaler
    }
}
