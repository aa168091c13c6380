// TrainingConfiguration: every knob of a fine-tuning run, as one Codable value.
import FrugalCore
import FrugalModels

/// How the numbers of a run are stored and computed.
public enum PrecisionPolicy: String, Sendable, Codable, CaseIterable {
    /// Everything in f32.
    case fp32
    /// f16 compute copies of trainable weights, f32 masters, dynamic loss scaling.
    case fp16
    /// bf16 compute copies of trainable weights, f32 masters.
    case bf16
    /// Trainable weights stored in bf16 themselves, 2 bytes a value (no f32 masters): each update
    /// computes in f32 from the widened weight and writes it back rounded to nearest even.
    case pureBF16 = "pure-bf16"

    /// The dtype trainable weights are rounded to for compute.
    public var computeDType: DType {
        switch self {
        case .fp32: .f32
        case .fp16: .f16
        case .bf16, .pureBF16: .bf16
        }
    }

    /// The dtype trainable tensors are stored in while training: the compute dtype, 2 bytes a
    /// value, under fp16, bf16 (compute copies of the optimizer's f32 masters) and pure bf16
    /// (updated in place, no masters); f32 under fp32.
    public var trainableDType: DType { computeDType }

    /// The dtype trainable tensors are created or loaded in (LoRA's adapters, a full fine-tune's
    /// weights, a value head): bf16 under pure bf16, else f32 — under fp16 and bf16 the
    /// optimizer's masters must start from the exact f32 values, and the `Trainer` replaces each
    /// f32 tensor by its 16-bit compute copy once its master exists (`Optimizer.init`).
    public var createdDType: DType { self == .pureBF16 ? .bf16 : .f32 }

    /// Whether f32 master copies of the trainable weights are kept for the optimizer.
    public var keepsMasters: Bool { self == .fp16 || self == .bf16 }

    /// The dtype forward activations are stored in unless a run says otherwise: the compute
    /// dtype, as `torch.autocast` leaves them.
    public var activationDType: DType { computeDType }
}

/// The optimizer.
public enum OptimizerKind: String, Sendable, Codable, CaseIterable {
    /// AdamW with f32 moments: 8 bytes of state per trainable value.
    case adamW = "adamw"
    /// AdamW with blockwise dynamic 8-bit moments, as bitsandbytes' 8-bit AdamW: 2 × 260/256 bytes
    /// of state per trainable value.
    case adamW8bit = "adamw8bit"
    /// SGD with momentum: 4 bytes of state per trainable value.
    case sgd

    /// Bytes of state this optimizer keeps for a tensor of `count` trainable values (f32 masters
    /// aside): two f32 moments, two 8-bit moments in whole blocks of 256, or one f32 buffer.
    public func stateBytes(values count: Int) -> Int {
        switch self {
        case .adamW: 8 * count
        case .adamW8bit: 2 * DType.dynamic8.byteCount(elements: DynamicQuantization.paddedCount(count))!
        case .sgd: 4 * count
        }
    }
}

/// How the learning rate changes over steps (after the linear warm-up).
public enum ScheduleKind: String, Sendable, Codable, CaseIterable {
    case constant, linear, cosine
}

/// What trains.
public enum TrainingMethod: Sendable, Codable, Equatable {
    /// Low-rank adapters on a frozen base.
    case lora(LoRAConfiguration)
    /// Every weight (stored in f32, or in bf16 under pure bf16).
    case full
}

/// Every setting of a fine-tuning run; defaults are those of a typical LoRA SFT.
public struct TrainingConfiguration: Sendable, Codable, Equatable {
    public var method: TrainingMethod = .lora(LoRAConfiguration())
    /// Block indices that do not train.
    public var frozenLayers: Set<Int> = []
    /// Optimizer steps to run.
    public var steps = 100
    /// Sequences per micro-batch.
    public var microBatch = 8
    /// Micro-batches per optimizer step.
    public var gradientAccumulation = 1
    public var learningRate: Float = 2e-4
    public var schedule: ScheduleKind = .cosine
    public var warmupSteps = 0
    public var optimizer: OptimizerKind = .adamW
    public var beta1: Float = 0.9
    public var beta2: Float = 0.999
    public var epsilon: Float = 1e-8
    /// SGD momentum.
    public var momentum: Float = 0.9
    public var weightDecay: Float = 0
    /// Clip the global gradient norm to this (0 = off).
    public var maxGradientNorm: Float = 1
    public var precision: PrecisionPolicy = .fp32
    /// Keep only block inputs and recompute blocks in backward.
    public var checkpointing = false
    /// Update each block's weights as soon as backward has its gradients (the optimizer step
    /// fused into backward), so one block's gradients live at a time. Needs gradient
    /// accumulation 1, no clipping and no fp16 loss scaling: all three need every gradient first.
    public var fusedOptimizerStep = false
    /// Keep the optimizer's f32 weights and moments in host memory and update there, on the CPU
    /// (ZeRO-Offload): each update copies the gradients to the host and the weights, rounded to
    /// the compute dtype, back to the device. With the fused step, block by block during backward.
    public var offloadOptimizer = false
    /// With checkpointing, keep each block's input in host memory until backward recomputes the
    /// block (pinned and copied asynchronously on a GPU).
    public var offloadActivations = false
    /// The dtype the blocks store forward activations in (f32, f16 or bf16); nil follows the
    /// precision (`PrecisionPolicy.activationDType`). Gradients stay f32.
    public var activations: DType?
    /// Initial loss scale under fp16, and how it adapts.
    public var lossScale = LossScaler.Settings()
    /// Seeds adapters, dropout and data order.
    public var seed: UInt64 = 42
    /// Write a checkpoint every this many steps (0 = only at the end and on interrupt).
    public var checkpointEvery = 0

    public init() {}

    /// The dtype this run stores forward activations in.
    public var activationDType: DType { activations ?? precision.activationDType }

    /// How a training pass of this run goes: checkpointing, activation storage and offload,
    /// dropout on, and `gradientScale`.
    public func passOptions(gradientScale: Float = 1, training: Bool = true) -> PassOptions {
        PassOptions(checkpointing: checkpointing, offloadActivations: offloadActivations, gradientScale: gradientScale,
                    training: training, activations: activationDType)
    }
}
