// TrainingEvent: what a run reports as it goes; the CLI renders it, the library never prints.
import FrugalCore

/// Figures of one optimizer step.
public struct StepMetrics: Sendable, Codable {
    /// 1-based step number.
    public var step: Int
    public var totalSteps: Int
    /// Mean cross-entropy per target token over the step's accumulated batch.
    public var loss: Double
    public var learningRate: Float
    /// Global gradient norm before clipping.
    public var gradientNorm: Double
    /// Tokens processed (padding excluded) and tokens that carried a loss.
    public var tokens: Int
    public var targetTokens: Int
    public var seconds: Double
    /// Seconds of each phase of the step on the device ("forward", "backward", "optimizer"),
    /// when the trainer timed them.
    public var phaseSeconds: [String: Double]?
    public var tokensPerSecond: Double { seconds > 0 ? Double(tokens) / seconds : 0 }
    /// Loss scale in force (fp16), else nil.
    public var lossScale: Float?
    /// The backend's memory by category, peak since the run started.
    public var memory: MemorySnapshot
    /// Epoch of the data when the step ended.
    public var epoch: Int
}

/// What a `Trainer` reports.
public enum TrainingEvent: Sendable {
    /// An optimizer step was applied.
    case step(StepMetrics)
    /// fp16 gradients overflowed: the step was skipped and the loss scale backed off.
    case skippedStep(step: Int, newLossScale: Float)
    /// A checkpoint was written.
    case checkpoint(path: String, step: Int)
}
