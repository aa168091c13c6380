// TrainingConfiguration: every knob of a fine-tuning run, as one Codable value.
import FrugalCore

/// How the numbers of a run are stored and computed.
public enum PrecisionPolicy: String, Sendable, Codable, CaseIterable {
    /// Everything in f32.
    case fp32
    /// f16 compute copies of trainable weights, f32 masters, dynamic loss scaling.
    case fp16
    /// bf16 compute copies of trainable weights, f32 masters.
    case bf16
    /// Trainable weights stored in bf16 themselves (no f32 masters).
    case pureBF16 = "pure-bf16"

    /// The dtype trainable weights are rounded to for compute.
    public var computeDType: DType {
        switch self {
        case .fp32: .f32
        case .fp16: .f16
        case .bf16, .pureBF16: .bf16
        }
    }
}

/// The optimizer and its hyper-parameters.
public enum OptimizerKind: String, Sendable, Codable {
    case adamW = "adamw"
    case sgd
}

/// How the learning rate changes over steps.
public enum ScheduleKind: String, Sendable, Codable {
    case constant, linear, cosine
}
