// CUDAKernels: the stable names of the kernel entry points the CUDA backend launches, by file.
import FrugalCore

/// One `extern "C"` kernel: its source file in `Kernels/` and its symbol.
public struct KernelName: Hashable, Sendable {
    public let file: String
    public let name: String
}

/// The kernel entry points, named once here so the backend and the compile test agree.
public enum CUDAKernels {
    /// The suffix of an entry point instantiated for a float storage dtype.
    static func suffix(_ dtype: DType) -> String {
        switch dtype {
        case .f32: "f32"
        case .f16: "f16"
        case .bf16: "bf16"
        default: preconditionFailure("no float kernel for \(dtype)")
        }
    }

    static let floatTypes: [DType] = [.f32, .f16, .bf16]

    static func embeddingForward(_ table: DType) -> KernelName {
        .init(file: "embedding.cu", name: "embedding_forward_" + (table.isQuantized ? table.rawValue : suffix(table)))
    }
    static let embeddingBackward = KernelName(file: "embedding.cu", name: "embedding_backward")

    /// The suffix of an entry point instantiated for an activation dtype and a weight dtype.
    static func suffix(_ activations: DType, _ weight: DType) -> String { suffix(activations) + "_" + suffix(weight) }

    static func rmsNormForward(_ activations: DType, _ weight: DType) -> KernelName {
        .init(file: "rmsnorm.cu", name: "rmsnorm_forward_" + suffix(activations, weight))
    }
    static func rmsNormRstd(_ activations: DType) -> KernelName { .init(file: "rmsnorm.cu", name: "rmsnorm_rstd_" + suffix(activations)) }
    static func rmsNormBackwardWeight(_ activations: DType) -> KernelName {
        .init(file: "rmsnorm.cu", name: "rmsnorm_backward_weight_" + suffix(activations))
    }
    static func rmsNormBackwardInput(_ activations: DType, _ weight: DType) -> KernelName {
        .init(file: "rmsnorm.cu", name: "rmsnorm_backward_input_" + suffix(activations, weight))
    }

    static func layerNormForward(_ activations: DType, _ weight: DType) -> KernelName {
        .init(file: "layernorm.cu", name: "layernorm_forward_" + suffix(activations, weight))
    }
    static func layerNormStatistics(_ activations: DType) -> KernelName {
        .init(file: "layernorm.cu", name: "layernorm_statistics_" + suffix(activations))
    }
    static func layerNormBackwardParameters(_ activations: DType) -> KernelName {
        .init(file: "layernorm.cu", name: "layernorm_backward_parameters_" + suffix(activations))
    }
    static func layerNormBackwardInput(_ activations: DType, _ weight: DType) -> KernelName {
        .init(file: "layernorm.cu", name: "layernorm_backward_input_" + suffix(activations, weight))
    }

    static func rope(_ dtype: DType) -> KernelName { .init(file: "rope.cu", name: "rope_" + suffix(dtype)) }

    static func attentionForward(_ dtype: DType) -> KernelName { .init(file: "attention.cu", name: "attention_forward_" + suffix(dtype)) }
    /// The tensor-core kernels for 16-bit activations and a head dimension of 64, 96 or 128
    /// (`AttentionLayout.tensorCoreHeadDims`).
    static func flashAttentionForward(_ dtype: DType, headDim: Int) -> KernelName {
        .init(file: "flash_attention.cu", name: "flash_attention_forward_\(suffix(dtype))_d\(headDim)")
    }
    static func flashAttentionBackwardQuery(_ dtype: DType, headDim: Int) -> KernelName {
        .init(file: "flash_attention.cu", name: "flash_attention_backward_query_\(suffix(dtype))_d\(headDim)")
    }
    static func flashAttentionBackwardKey(_ dtype: DType, headDim: Int) -> KernelName {
        .init(file: "flash_attention.cu", name: "flash_attention_backward_key_\(suffix(dtype))_d\(headDim)")
    }
    static func attentionDelta(_ dtype: DType) -> KernelName { .init(file: "attention.cu", name: "attention_delta_" + suffix(dtype)) }
    static func attentionBackwardQuery(_ dtype: DType) -> KernelName {
        .init(file: "attention.cu", name: "attention_backward_query_" + suffix(dtype))
    }
    static func attentionBackwardKey(_ dtype: DType) -> KernelName {
        .init(file: "attention.cu", name: "attention_backward_key_" + suffix(dtype))
    }

    static func attentionPack(_ source: DType, to packed: DType) -> KernelName {
        .init(file: "attention_gemm.cu", name: "attention_pack_\(suffix(source))_to_\(suffix(packed))")
    }
    static func attentionUnpack(_ destination: DType) -> KernelName {
        .init(file: "attention_gemm.cu", name: "attention_unpack_" + suffix(destination))
    }
    static func attentionSoftmax(_ dtype: DType) -> KernelName {
        .init(file: "attention_gemm.cu", name: "attention_softmax_" + suffix(dtype))
    }
    static func attentionSoftmaxBackward(_ dtype: DType) -> KernelName {
        .init(file: "attention_gemm.cu", name: "attention_softmax_backward_" + suffix(dtype))
    }

    static func activationForward(_ dtype: DType) -> KernelName { .init(file: "activations.cu", name: "activation_forward_" + suffix(dtype)) }
    /// The activation's backward for `dtype` activations, writing f32 gradients or, `rounded`, gradients in `dtype` (16 bits).
    static func activationBackward(_ dtype: DType, rounded: Bool = false) -> KernelName {
        .init(file: "activations.cu", name: "activation_backward_" + suffix(dtype) + (rounded ? "_rounded" : ""))
    }
    static func gatedForward(_ dtype: DType) -> KernelName { .init(file: "activations.cu", name: "gated_forward_" + suffix(dtype)) }
    /// As `activationBackward`, for the gated pair.
    static func gatedBackward(_ dtype: DType, rounded: Bool = false) -> KernelName {
        .init(file: "activations.cu", name: "gated_backward_" + suffix(dtype) + (rounded ? "_rounded" : ""))
    }

    static func add(_ dtype: DType) -> KernelName { .init(file: "elementwise.cu", name: "add_" + suffix(dtype)) }
    static func multiply(_ dtype: DType) -> KernelName { .init(file: "elementwise.cu", name: "multiply_" + suffix(dtype)) }
    static func scale(_ dtype: DType) -> KernelName { .init(file: "elementwise.cu", name: "scale_" + suffix(dtype)) }
    static func addRowVector(_ out: DType, _ vector: DType) -> KernelName {
        .init(file: "elementwise.cu", name: "add_row_vector_" + suffix(out, vector))
    }

    static func cast(_ from: DType, _ to: DType) -> KernelName {
        .init(file: "cast.cu", name: "cast_\(suffix(from))_to_\(suffix(to))")
    }
    static func round(_ dtype: DType) -> KernelName { .init(file: "cast.cu", name: "round_f32_to_" + suffix(dtype)) }
    /// Packed blocks decoded to f32, or rounded to f16 or bf16.
    static func dequantize(_ dtype: DType, to output: DType = .f32) -> KernelName {
        precondition(dtype.isQuantized, "dequantize of \(dtype)")
        return .init(file: "dequantize.cu", name: "dequantize_" + dtype.rawValue + (output == .f32 ? "" : "_to_" + suffix(output)))
    }

    static let sumSquaresChunks = KernelName(file: "reduce.cu", name: "sum_squares_chunks")
    static let sumPartialsRanges = KernelName(file: "reduce.cu", name: "sum_partials_ranges")
    static let allFinite = KernelName(file: "reduce.cu", name: "all_finite")
    static let columnSum = KernelName(file: "reduce.cu", name: "column_sum")
    static let columnPartialsAdd = KernelName(file: "reduce.cu", name: "column_partials_add")

    static let crossEntropyRows = KernelName(file: "cross_entropy.cu", name: "cross_entropy_rows")
    static let crossEntropyTotal = KernelName(file: "cross_entropy.cu", name: "cross_entropy_total")

    static func adamW(_ shadow: DType) -> KernelName { .init(file: "adamw.cu", name: "adamw_" + suffix(shadow)) }
    /// AdamW over chunks of many tensors: f32 masters with `shadow` copies, or parameters stored as `parameter`.
    static func adamWChunks(shadow: DType) -> KernelName { .init(file: "adamw.cu", name: "adamw_chunks_" + suffix(shadow)) }
    static func adamWParameterChunks(_ parameter: DType) -> KernelName {
        .init(file: "adamw.cu", name: "adamw_parameter_chunks_" + suffix(parameter))
    }
    static let zeroChunks = KernelName(file: "reduce.cu", name: "zero_chunks")
    /// AdamW on a parameter stored in `parameter`'s dtype itself (no master).
    static func adamWParameter(_ parameter: DType) -> KernelName {
        .init(file: "adamw.cu", name: "adamw_parameter_" + suffix(parameter))
    }
    /// 8-bit AdamW and SGD on a parameter stored in f32, f16 or bf16.
    static func adamW8bit(_ parameter: DType) -> KernelName { .init(file: "adamw8bit.cu", name: "adamw8bit_" + suffix(parameter)) }
    static func sgd(_ parameter: DType) -> KernelName { .init(file: "sgd.cu", name: "sgd_" + suffix(parameter)) }

    /// Every entry point the backend may launch.
    public static var allEntryPoints: [(file: String, name: String)] {
        var names: [KernelName] = [embeddingBackward, sumSquaresChunks, sumPartialsRanges, allFinite, columnSum, columnPartialsAdd,
                                   zeroChunks,
                                   crossEntropyRows, crossEntropyTotal]
        for t in floatTypes {
            names += [embeddingForward(t), rmsNormRstd(t), rmsNormBackwardWeight(t), layerNormStatistics(t),
                      layerNormBackwardParameters(t), rope(t), attentionForward(t), attentionDelta(t),
                      attentionBackwardQuery(t), attentionBackwardKey(t), attentionSoftmax(t), attentionSoftmaxBackward(t),
                      attentionUnpack(t), activationForward(t), activationBackward(t), gatedForward(t), gatedBackward(t),
                      add(t), multiply(t), scale(t), round(t), adamW(t), adamWParameter(t), adamWChunks(shadow: t),
                      adamWParameterChunks(t), adamW8bit(t),
                      sgd(t)]
            for w in floatTypes {
                names += [rmsNormForward(t, w), rmsNormBackwardInput(t, w), layerNormForward(t, w), layerNormBackwardInput(t, w),
                          attentionPack(t, to: w), addRowVector(t, w), cast(t, w)]
            }
        }
        for t in [DType.f16, .bf16] {
            names += [activationBackward(t, rounded: true), gatedBackward(t, rounded: true)]
            names += AttentionLayout.tensorCoreHeadDims.sorted().flatMap {
                [flashAttentionForward(t, headDim: $0), flashAttentionBackwardQuery(t, headDim: $0),
                 flashAttentionBackwardKey(t, headDim: $0)]
            }
        }
        for q in DType.allCases where q.isQuantized && !q.isOptimizerState {
            names += [embeddingForward(q)] + floatTypes.map { dequantize(q, to: $0) }
        }
        return names.map { ($0.file, $0.name) }
    }
}
