// RandomWeights: decoders of a given shape with random weights, for benchmarks (BENCH.md's
// workloads use random weights of the real shapes) and tests that need no model file.
import Foundation
import FrugalCore
import FrugalFormats

extension ModelConfiguration {
    /// SmolLM2-135M's shape (BENCH.md W0): 30 layers, hidden 576, MLP 1536, 9/3 heads of 64,
    /// vocabulary 49152, tied embeddings, RMSNorm, SwiGLU, rotary θ 100000.
    public static var smolLM2_135M: ModelConfiguration {
        ModelConfiguration(architecture: .llama, modelType: "llama", vocabSize: 49152, hiddenSize: 576,
                           intermediateSize: 1536, layers: 30, heads: 9, kvHeads: 3, headDim: 64, maxPositions: 8192,
                           normEps: 1e-5, ropeTheta: 100_000, tiedEmbeddings: true, bosTokenID: 1, eosTokenIDs: [2])
    }

    /// Llama-3.1-8B's shape (BENCH.md W1): 32 layers, hidden 4096, MLP 14336, 32/8 heads,
    /// vocabulary 128256, rotary θ 500000 with Llama-3 scaling left out (it changes no cost).
    public static var llama31_8B: ModelConfiguration {
        ModelConfiguration(architecture: .llama, modelType: "llama", vocabSize: 128_256, hiddenSize: 4096,
                           intermediateSize: 14336, layers: 32, heads: 32, kvHeads: 8, headDim: 128, maxPositions: 131_072,
                           normEps: 1e-5, ropeTheta: 500_000, bosTokenID: 128_000, eosTokenIDs: [128_001])
    }

    /// Llama-2-7B's shape (BENCH.md W2, the seeds' model): 32 layers, hidden 4096, MLP 11008,
    /// 32 heads without grouping, vocabulary 32000.
    public static var llama2_7B: ModelConfiguration {
        ModelConfiguration(architecture: .llama, modelType: "llama", vocabSize: 32000, hiddenSize: 4096,
                           intermediateSize: 11008, layers: 32, heads: 32, kvHeads: 32, headDim: 128, maxPositions: 4096,
                           normEps: 1e-5, bosTokenID: 1, eosTokenIDs: [2])
    }

    /// OPT-350m's shape (BENCH.md W3, the DeepSpeed-Chat seed's model): 24 post-norm layers of
    /// width 1024 with biases, ReLU MLP 4096, 16 heads, learned positions (offset 2), 512-wide
    /// tied embeddings projected in and out, vocabulary 50272, no final norm.
    public static var opt350M: ModelConfiguration {
        ModelConfiguration(architecture: .opt, modelType: "opt", vocabSize: 50272, hiddenSize: 1024, intermediateSize: 4096,
                           layers: 24, heads: 16, kvHeads: 16, headDim: 64, maxPositions: 2048, normEps: 1e-5, normKind: .layer,
                           activation: .relu, gatedMLP: false, tiedEmbeddings: true, attentionBias: true, outputBias: true,
                           mlpBias: true, learnedPositions: true, positionOffset: 2, normBeforeBlock: false, finalNorm: false,
                           wordEmbedProjDim: 512, bosTokenID: 2, eosTokenIDs: [2])
    }

    /// Phi-3-mini's shape (BENCH.md W4): 32 layers, hidden 3072, MLP 8192, 32 heads of 96,
    /// vocabulary 32064, untied head.
    public static var phi3Mini: ModelConfiguration {
        ModelConfiguration(architecture: .phi3, modelType: "phi3", vocabSize: 32064, hiddenSize: 3072, intermediateSize: 8192,
                           layers: 32, heads: 32, kvHeads: 32, headDim: 96, maxPositions: 4096, normEps: 1e-5,
                           bosTokenID: 1, eosTokenIDs: [32000])
    }

    /// Gemma-2B's shape (BENCH.md W4): 18 layers, hidden 2048, GeGLU MLP 16384, 8 query heads of
    /// 256 over one key/value head, vocabulary 256000, tied embeddings scaled by √2048, `1 + w` norms.
    public static var gemma2B: ModelConfiguration {
        ModelConfiguration(architecture: .gemma, modelType: "gemma", vocabSize: 256_000, hiddenSize: 2048,
                           intermediateSize: 16384, layers: 18, heads: 8, kvHeads: 1, headDim: 256, maxPositions: 8192,
                           normEps: 1e-6, normWeightOffset: 1, activation: .geluTanh, tiedEmbeddings: true,
                           embeddingScale: Float(2048.0.squareRoot()), bosTokenID: 2, eosTokenIDs: [1])
    }

    /// Shape names for `--shape` options.
    public static let shapeNames = ["smollm2", "llama3.1-8b", "llama2-7b", "opt-350m", "phi3-mini", "gemma-2b"]

    /// Shapes by name, for `--shape` options (`shapeNames`, and a few spellings of each).
    public static func named(_ name: String) -> ModelConfiguration? {
        switch name.lowercased() {
        case "smollm2", "smollm2-135m", "smollm2-135m-shape": smolLM2_135M
        case "llama3.1-8b", "llama-3.1-8b", "llama3.1-8b-shape": llama31_8B
        case "llama2-7b", "llama-2-7b", "llama2-7b-shape": llama2_7B
        case "opt-350m", "opt-350m-shape": opt350M
        case "phi3-mini", "phi-3-mini", "phi3-mini-shape": phi3Mini
        case "gemma-2b", "gemma-2b-shape": gemma2B
        default: nil
        }
    }
}

extension DecoderWeights {
    /// Weights for `configuration` drawn as Hugging Face initializes a new model: every matrix
    /// uniform with standard deviation `std` (HF draws normal(0, 0.02)), biases zero, norm
    /// weights one (zero for Gemma's `1 + w`).
    ///
    /// - Parameters:
    ///   - category: `.weights` for a frozen base (LoRA), `.trainable` for a full fine-tune.
    ///   - dtype: how a frozen base's matrices are stored (f32, f16 or bf16); trainable weights are
    ///     f32, or bf16 under pure bf16 (every tensor then, vectors too: the f32 draws rounded).
    ///   - quantize: a packed type (`nf4`, `q8_0`) the block projections are then re-encoded as,
    ///     where their rows are whole blocks, as `ModelFiles.decoder(quantize:)` does; frozen only.
    ///   - seed: each tensor draws from its own stream derived from it.
    public static func random(_ configuration: ModelConfiguration, on backend: Backend, category: MemoryCategory = .weights,
                              dtype: DType = .f32, quantize: DType? = nil, std: Float = 0.02, seed: UInt64 = 0) -> DecoderWeights {
        precondition([.f32, .f16, .bf16].contains(dtype)
                     && (category == .weights || (dtype == .f32 || dtype == .bf16) && quantize == nil),
                     "random weights: \(dtype) \(category.rawValue) (trainable weights are f32 or bf16)")
        let c = configuration
        var stream: UInt64 = 0
        func matrix(_ rows: Int, _ columns: Int, projection: Bool = false) -> Tensor {
            stream += 1
            let bytes = uniformBytes(rows * columns, dtype, std: std, seed: seed &+ stream &* 0x9E37_79B9)
            if projection, let quantize, let encoded = bytes.withUnsafeBytes({
                // Uniform values are finite: encoding cannot throw.
                try! BaseQuantization.encode(StoredTensor(dtype: dtype, shape: [rows, columns], bytes: $0), as: quantize,
                                             name: "random projection")
            }) {
                return encoded.withUnsafeBytes { backend.upload($0, [rows, columns], quantize, category) }
            }
            return bytes.withUnsafeBytes { backend.upload($0, [rows, columns], dtype, category) }
        }
        func vector(_ count: Int, _ value: Float) -> Tensor {
            if category == .trainable && dtype == .bf16 {
                return [UInt16](repeating: HalfPrecision.floatToBF16(value), count: count).withUnsafeBytes {
                    backend.upload($0, [count], .bf16, category)
                }
            }
            return [Float](repeating: value, count: count).withUnsafeBytes { backend.upload($0, [count], .f32, category) }
        }
        func linear(_ outputs: Int, _ inputs: Int, bias: Bool) -> Linear {
            Linear(weight: matrix(outputs, inputs, projection: true), bias: bias ? vector(outputs, 0) : nil)
        }
        func norm() -> Norm {
            Norm(weight: vector(c.hiddenSize, c.normWeightOffset != 0 ? 0 : 1),
                 bias: c.normKind == .layer ? vector(c.hiddenSize, 0) : nil)
        }
        let q = c.heads * c.headDim, kv = c.kvHeads * c.headDim, width = c.wordEmbedProjDim ?? c.hiddenSize
        let embedding = matrix(c.vocabSize, width)
        let blocks = (0..<c.layers).map { _ in
            BlockWeights(attentionNorm: norm(), query: linear(q, c.hiddenSize, bias: c.attentionBias),
                         key: linear(kv, c.hiddenSize, bias: c.attentionBias),
                         value: linear(kv, c.hiddenSize, bias: c.attentionBias),
                         output: linear(c.hiddenSize, q, bias: c.outputBias), mlpNorm: norm(),
                         gate: c.gatedMLP ? linear(c.intermediateSize, c.hiddenSize, bias: c.mlpBias) : nil,
                         up: linear(c.intermediateSize, c.hiddenSize, bias: c.mlpBias),
                         down: linear(c.hiddenSize, c.intermediateSize, bias: c.mlpBias))
        }
        return DecoderWeights(
            tokenEmbedding: embedding,
            positionEmbedding: c.learnedPositions ? matrix(c.maxPositions + c.positionOffset, c.hiddenSize) : nil,
            projectIn: width == c.hiddenSize ? nil : Linear(weight: matrix(c.hiddenSize, width), bias: nil),
            projectOut: width == c.hiddenSize ? nil : Linear(weight: matrix(width, c.hiddenSize), bias: nil),
            blocks: blocks, finalNorm: c.finalNorm ? norm() : nil,
            head: c.tiedEmbeddings ? embedding : matrix(c.vocabSize, width))
    }

    /// `count` values uniform in `±std·√3` (standard deviation `std`) as `dtype` bytes, drawn in
    /// chunks of 1M values on all cores, each chunk from its own SplitMix64 stream (an 8B model's
    /// weights take seconds, not minutes).
    private static func uniformBytes(_ count: Int, _ dtype: DType, std: Float, seed: UInt64) -> [UInt8] {
        let bound = std * Float(3).squareRoot(), width = dtype == .f32 ? 4 : 2, chunk = 1 << 20
        var bytes = [UInt8](repeating: 0, count: count * width)
        bytes.withUnsafeMutableBytes { buffer in
            nonisolated(unsafe) let base = buffer.baseAddress!
            DispatchQueue.concurrentPerform(iterations: (count + chunk - 1) / chunk) { index in
                var random = SplitMix64(seed: seed &+ UInt64(index) &* 0xD1B5_4A32_D192_ED03)
                for i in index * chunk..<min(count, (index + 1) * chunk) {
                    let value = (random.nextUniform() * 2 - 1) * bound
                    switch dtype {
                    case .f32: base.storeBytes(of: value, toByteOffset: 4 * i, as: Float.self)
                    case .f16: base.storeBytes(of: HalfPrecision.floatToF16(value), toByteOffset: 2 * i, as: UInt16.self)
                    default: base.storeBytes(of: HalfPrecision.floatToBF16(value), toByteOffset: 2 * i, as: UInt16.self)
                    }
                }
            }
        }
        return bytes
    }
}

extension Decoder {
    /// A decoder of `configuration`'s shape with random weights (`DecoderWeights.random`).
    public static func random(_ configuration: ModelConfiguration, on backend: Backend, category: MemoryCategory = .weights,
                              dtype: DType = .f32, quantize: DType? = nil, seed: UInt64 = 0) -> Decoder {
        Decoder(configuration: configuration,
                weights: .random(configuration, on: backend, category: category, dtype: dtype, quantize: quantize, seed: seed),
                backend: backend)
    }
}
