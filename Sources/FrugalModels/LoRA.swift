// LoRA: a low-rank adapter beside a frozen projection (Hu et al., 2021, arXiv:2106.09685).
import FrugalCore
import FrugalFormats

/// A low-rank adapter on a frozen projection: `y = x·Wᵀ + b + s · dropout(x)·Aᵀ·Bᵀ`.
///
/// `A` (rank, inputs) starts Kaiming-uniform as in PEFT and `B` (outputs, rank) starts at zero, so
/// the adapted model first equals the base. `s` is `alpha / rank` (or `alpha / √rank` with
/// rsLoRA). Only `A` and `B` train; the base weight stays frozen, in whatever dtype it has.
public final class LoRAAdapter: @unchecked Sendable {
    /// (rank, inputs), the weights the forward pass uses (f32 rounded to the compute dtype, or
    /// stored in bf16 under pure bf16).
    public internal(set) var a: Tensor
    /// (outputs, rank)
    public internal(set) var b: Tensor
    public let rank: Int
    public let alpha: Float
    /// The factor applied to the adapter's output.
    public let scale: Float
    /// Probability of zeroing an input of the adapter during training.
    public let dropout: Float
    /// Whether the adapter contributes (off gives the base model, e.g. as a frozen reference).
    public var enabled = true

    /// Adapter tensors allocated on `backend` as trainable memory, initialized as PEFT does.
    /// - Parameters:
    ///   - seed: seeds the Kaiming-uniform draw of `A` (bound `1/√inputs`).
    ///   - dtype: how `A` and `B` are stored: f32, or bf16 (pure bf16: `A` drawn in f32, then
    ///     rounded to nearest even, one adapter at a time).
    public init(backend: Backend, inputs: Int, outputs: Int, _ configuration: LoRAConfiguration, seed: UInt64,
                dtype: DType = .f32) {
        precondition([.f32, .f16, .bf16].contains(dtype), "LoRA adapter of dtype \(dtype)")
        rank = configuration.rank
        alpha = configuration.alpha
        dropout = configuration.dropout
        scale = configuration.scale
        var random = SplitMix64(seed: seed)
        let bound = 1 / Float(inputs).squareRoot()
        let values = (0..<configuration.rank * inputs).map { _ in (random.nextUniform() * 2 - 1) * bound }
        if dtype == .f32 {
            a = values.withUnsafeBytes { backend.upload($0, [configuration.rank, inputs], .f32, .trainable) }
        } else {
            let bits = values.map { dtype == .bf16 ? HalfPrecision.floatToBF16($0) : HalfPrecision.floatToF16($0) }
            a = bits.withUnsafeBytes { backend.upload($0, [configuration.rank, inputs], dtype, .trainable) }
        }
        b = backend.zeros([outputs, rank], dtype, .trainable)
    }
}

/// LoRA settings: which projections get adapters, their rank and scale.
public struct LoRAConfiguration: Sendable, Codable, Equatable {
    public var rank: Int = 16
    public var alpha: Float = 32
    public var dropout: Float = 0
    /// Projection roles: `q`, `k`, `v`, `o`, `gate`, `up`, `down`, or `all-linear`.
    public var targets: [String] = ["q", "k", "v"]
    /// rsLoRA: scale by alpha/√rank instead of alpha/rank.
    public var rankStabilized = false

    public init(rank: Int = 16, alpha: Float = 32, dropout: Float = 0, targets: [String] = ["q", "k", "v"],
                rankStabilized: Bool = false) {
        self.rank = rank; self.alpha = alpha; self.dropout = dropout
        self.targets = targets; self.rankStabilized = rankStabilized
    }

    /// The factor applied to `B·A·x`.
    public var scale: Float { rankStabilized ? alpha / Float(rank).squareRoot() : alpha / Float(rank) }
}

/// Which projections of a block LoRA adapts, by role name.
public enum ProjectionRole: String, CaseIterable, Sendable {
    case q, k, v, o, gate, up, down

    /// The roles a target list names: role names, HF module names (`q_proj`, `o_proj`,
    /// `gate_proj`, `fc1`, …) or `all-linear`.
    /// - Throws: `FrugalError.invalidArgument` naming an unknown target.
    public static func parse(_ targets: [String]) throws -> Set<ProjectionRole> {
        var roles = Set<ProjectionRole>()
        for target in targets {
            switch target.lowercased() {
            case "all-linear", "all_linear", "all": roles.formUnion(allCases)
            case "q", "q_proj", "query": roles.insert(.q)
            case "k", "k_proj", "key": roles.insert(.k)
            case "v", "v_proj", "value": roles.insert(.v)
            case "qkv", "qkv_proj", "c_attn": roles.formUnion([.q, .k, .v])
            case "o", "o_proj", "out_proj", "dense", "c_proj", "attn_output": roles.insert(.o)
            case "gate", "gate_proj": roles.insert(.gate)
            case "up", "up_proj", "fc1", "c_fc": roles.insert(.up)
            case "down", "down_proj", "fc2": roles.insert(.down)
            case "gate_up_proj": roles.formUnion([.gate, .up])
            default:
                throw FrugalError.invalidArgument("unknown LoRA target '\(target)' (use q, k, v, o, gate, up, down or all-linear)")
            }
        }
        return roles
    }
}

/// A small deterministic random stream (SplitMix64), whose state is one integer so runs resume exactly.
public struct SplitMix64: Sendable, Codable, Equatable {
    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform float in [0, 1).
    public mutating func nextUniform() -> Float { Float(next() >> 40) / Float(1 << 24) }
}
