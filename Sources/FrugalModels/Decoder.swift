// Decoder: the one transformer decoder every supported family runs through (forward).
import FrugalCore
import FrugalFormats

/// A decoder-only language model: configuration, weights, and the backend they live on.
///
/// Families differ only through `ModelConfiguration`: norm kind and placement, gated or plain
/// MLP, rotary or learned positions, biases, embedding scale, OPT's projections.
public final class Decoder: @unchecked Sendable {
    public let configuration: ModelConfiguration
    public let weights: DecoderWeights
    public let backend: Backend
    private let inverseFrequencies: [Float]

    public init(configuration: ModelConfiguration, weights: DecoderWeights, backend: Backend) {
        self.configuration = configuration
        self.weights = weights
        self.backend = backend
        self.inverseFrequencies = configuration.usesRotaryPositions ? configuration.ropeInverseFrequencies() : []
    }

    /// Logits (batch·length, vocab) for `tokens` laid out as `batch` sequences of equal length.
    ///
    /// With a cache (batch 1), the tokens continue the cached positions and are appended to it.
    /// - Parameters:
    ///   - lastOnly: return logits of each sequence's last position only (batch, vocab).
    public func logits(_ tokens: [Int32], batch: Int = 1, cache: KVCache? = nil, lastOnly: Bool = false) -> Tensor {
        var hidden = hiddenStates(tokens, batch: batch, cache: cache)
        if lastOnly {
            let length = tokens.count / batch
            let last = backend.zeros([batch, hidden.shape.last], .f32, .activations)
            for b in 0..<batch {
                backend.copy(last, at: b * hidden.shape.last, from: hidden.rows((b * length + length - 1)..<(b * length + length)))
            }
            hidden = last
        }
        let out = backend.zeros([hidden.shape.rows, configuration.vocabSize], .f32, .activations)
        backend.linear(out, hidden, weights.head, bias: nil)
        return out
    }

    /// Final hidden states (batch·length, embedding dim), before the output head.
    public func hiddenStates(_ tokens: [Int32], batch: Int = 1, cache: KVCache? = nil) -> Tensor {
        precondition(batch > 0 && tokens.count % batch == 0, "\(tokens.count) tokens do not split into \(batch) sequences")
        precondition(cache == nil || batch == 1, "a KV cache holds one sequence")
        let c = configuration, rows = tokens.count, length = rows / batch
        let start = cache?.length ?? 0
        if let cache { precondition(start + length <= cache.capacity, "KV cache full: \(cache.capacity) positions") }
        let positions = (0..<rows).map { Int32(start + $0 % length) }

        let embedded = backend.zeros([rows, weights.tokenEmbedding.shape.last], .f32, .activations)
        backend.embedding(embedded, weights.tokenEmbedding, tokens: tokens)
        if c.embeddingScale != 1 { backend.scale(embedded, by: c.embeddingScale) }
        var x = embedded
        if let projectIn = weights.projectIn {
            x = backend.zeros([rows, c.hiddenSize], .f32, .activations)
            backend.linear(x, embedded, projectIn.weight, bias: projectIn.bias)
        }
        if let table = weights.positionEmbedding {
            let learned = backend.zeros([rows, c.hiddenSize], .f32, .activations)
            backend.embedding(learned, table, tokens: positions.map { $0 + Int32(c.positionOffset) })
            backend.add(x, x, learned)
        }
        for (index, block) in weights.blocks.enumerated() {
            x = forward(block, index: index, x, batch: batch, positions: positions, cache: cache)
        }
        cache?.advance(by: length)
        if let norm = weights.finalNorm { x = normalize(x, norm) }
        if let projectOut = weights.projectOut {
            let projected = backend.zeros([rows, projectOut.outputs], .f32, .activations)
            backend.linear(projected, x, projectOut.weight, bias: projectOut.bias)
            x = projected
        }
        return x
    }

    // MARK: - Blocks

    private func forward(_ block: BlockWeights, index: Int, _ x: Tensor, batch: Int, positions: [Int32],
                         cache: KVCache?) -> Tensor {
        let preNorm = configuration.normBeforeBlock
        var h = preNorm ? normalize(x, block.attentionNorm) : x
        let attended = attention(block, index: index, h, batch: batch, positions: positions, cache: cache)
        let afterAttention = backend.zeros(x.shape, .f32, .activations)
        backend.add(afterAttention, x, attended)
        let residual = preNorm ? afterAttention : normalize(afterAttention, block.attentionNorm)

        h = preNorm ? normalize(residual, block.mlpNorm) : residual
        let mlpOut = mlp(block, h)
        let out = backend.zeros(x.shape, .f32, .activations)
        backend.add(out, residual, mlpOut)
        return preNorm ? out : normalize(out, block.mlpNorm)
    }

    private func attention(_ block: BlockWeights, index: Int, _ h: Tensor, batch: Int, positions: [Int32],
                           cache: KVCache?) -> Tensor {
        let c = configuration, rows = h.shape.rows, length = rows / batch
        let q = project(h, block.query), k = project(h, block.key), v = project(h, block.value)
        if c.usesRotaryPositions {
            backend.rope(q, heads: c.heads, headDim: c.headDim, positions: positions, inverseFrequencies: inverseFrequencies)
            backend.rope(k, heads: c.kvHeads, headDim: c.headDim, positions: positions, inverseFrequencies: inverseFrequencies)
        }
        var keys = k, values = v, keyLength = length, offset = 0
        if let cache {
            offset = cache.length
            backend.copy(cache.keys[index], at: offset * k.shape.last, from: k)
            backend.copy(cache.values[index], at: offset * v.shape.last, from: v)
            keyLength = offset + length
            keys = cache.keys[index].rows(0..<keyLength)
            values = cache.values[index].rows(0..<keyLength)
        }
        let layout = AttentionLayout(batch: batch, queryLength: length, keyLength: keyLength, queryOffset: offset,
                                     heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim,
                                     scale: 1 / Float(c.headDim).squareRoot())
        let attended = backend.zeros(q.shape, .f32, .activations)
        backend.attention(attended, q: q, k: keys, v: values, layout: layout)
        return project(attended, block.output)
    }

    private func mlp(_ block: BlockWeights, _ h: Tensor) -> Tensor {
        let up = project(h, block.up)
        if let gate = block.gate {
            let g = project(h, gate)
            backend.gated(g, gate: g, up: up, configuration.activation)
            return project(g, block.down)
        }
        backend.activate(up, up, configuration.activation)
        return project(up, block.down)
    }

    private func project(_ x: Tensor, _ linear: Linear) -> Tensor {
        let out = backend.zeros([x.shape.rows, linear.outputs], .f32, .activations)
        backend.linear(out, x, linear.weight, bias: linear.bias)
        return out
    }

    private func normalize(_ x: Tensor, _ norm: Norm) -> Tensor {
        let out = backend.zeros(x.shape, .f32, .activations)
        if let bias = norm.bias {
            backend.layerNorm(out, x, norm.weight, bias, eps: configuration.normEps)
        } else {
            backend.rmsNorm(out, x, norm.weight, eps: configuration.normEps, weightOffset: configuration.normWeightOffset)
        }
        return out
    }
}
