// RandomWeights: decoders of a given shape with random weights, for benchmarks (BENCH.md's
// workloads use random weights of the real shapes) and tests that need no model file.
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

    /// Shapes by name, for `--shape` options: `smollm2` (SmolLM2-135M).
    public static func named(_ name: String) -> ModelConfiguration? {
        switch name.lowercased() {
        case "smollm2", "smollm2-135m", "smollm2-135m-shape": smolLM2_135M
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
    ///   - seed: each tensor draws from its own stream derived from it.
    /// - Note: OPT's embedding projections (`wordEmbedProjDim`) are not built.
    public static func random(_ configuration: ModelConfiguration, on backend: Backend, category: MemoryCategory = .weights,
                              std: Float = 0.02, seed: UInt64 = 0) -> DecoderWeights {
        let c = configuration
        var stream: UInt64 = 0
        func matrix(_ rows: Int, _ columns: Int) -> Tensor {
            stream += 1
            let t = backend.zeros([rows, columns], .f32, category)
            fillUniform(t.floats, std: std, seed: seed &+ stream &* 0x9E37_79B9)
            return t
        }
        func vector(_ count: Int, _ value: Float) -> Tensor {
            let t = backend.zeros([count], .f32, category)
            if value != 0 { t.floats.update(repeating: value) }
            return t
        }
        func linear(_ outputs: Int, _ inputs: Int, bias: Bool) -> Linear {
            Linear(weight: matrix(outputs, inputs), bias: bias ? vector(outputs, 0) : nil)
        }
        func norm() -> Norm {
            Norm(weight: vector(c.hiddenSize, c.normWeightOffset != 0 ? 0 : 1),
                 bias: c.normKind == .layer ? vector(c.hiddenSize, 0) : nil)
        }
        let q = c.heads * c.headDim, kv = c.kvHeads * c.headDim
        let embedding = matrix(c.vocabSize, c.hiddenSize)
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
            projectIn: nil, projectOut: nil, blocks: blocks, finalNorm: c.finalNorm ? norm() : nil,
            head: c.tiedEmbeddings ? embedding : matrix(c.vocabSize, c.hiddenSize))
    }

    /// Fills `values` uniformly in `±std·√3` (standard deviation `std`) from a SplitMix64 stream.
    private static func fillUniform(_ values: UnsafeMutableBufferPointer<Float>, std: Float, seed: UInt64) {
        var random = SplitMix64(seed: seed)
        let bound = std * Float(3).squareRoot()
        for i in values.indices { values[i] = (random.nextUniform() * 2 - 1) * bound }
    }
}

extension Decoder {
    /// A decoder of `configuration`'s shape with random weights (`DecoderWeights.random`).
    public static func random(_ configuration: ModelConfiguration, on backend: Backend, category: MemoryCategory = .weights,
                              seed: UInt64 = 0) -> Decoder {
        Decoder(configuration: configuration,
                weights: .random(configuration, on: backend, category: category, seed: seed), backend: backend)
    }
}
