// Decoder: the one transformer decoder every supported family runs through — forward for inference.
import FrugalCore
import FrugalFormats

/// A decoder-only language model: configuration, weights, and the backend they live on.
///
/// Families differ only through `ModelConfiguration`: norm kind and placement, gated or plain
/// MLP, rotary or learned positions, biases, embedding scale, OPT's projections. Training
/// (forward with saved activations, and backward) is in `Decoder+Training.swift`.
public final class Decoder: @unchecked Sendable {
    public let configuration: ModelConfiguration
    /// The weights; LoRA adapters are attached to its projections in place.
    public internal(set) var weights: DecoderWeights
    public let backend: Backend
    let inverseFrequencies: [Float]

    /// - Parameter inverseFrequencies: rotary frequencies when the file gives its own (GGUF's
    ///   `rope_freqs` for Llama 3.1); by default those of the configuration.
    public init(configuration: ModelConfiguration, weights: DecoderWeights, backend: Backend,
                inverseFrequencies: [Float]? = nil) {
        self.configuration = configuration
        self.weights = weights
        self.backend = backend
        self.inverseFrequencies = inverseFrequencies
            ?? (configuration.usesRotaryPositions ? configuration.ropeInverseFrequencies() : [])
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
        let out = backend.empty([hidden.shape.rows, configuration.vocabSize], .f32, .activations)
        backend.linear(out, hidden, weights.head, bias: nil)
        return out
    }

    /// Final hidden states (batch·length, embedding dim), before the output head.
    public func hiddenStates(_ tokens: [Int32], batch: Int = 1, cache: KVCache? = nil) -> Tensor {
        precondition(batch > 0 && tokens.count % batch == 0, "\(tokens.count) tokens do not split into \(batch) sequences")
        precondition(cache == nil || batch == 1, "a KV cache holds one sequence")
        let length = tokens.count / batch, start = cache?.length ?? 0
        if let cache { precondition(start + length <= cache.capacity, "KV cache full: \(cache.capacity) positions") }
        let input = ForwardInput(tokens: tokens, batch: batch, positions: (0..<tokens.count).map { Int32(start + $0 % length) })
        var x = embed(input)
        for index in weights.blocks.indices {
            x = blockForward(index, x, input, cache: cache, tape: nil)
        }
        cache?.advance(by: length)
        return finish(x)
    }

    // MARK: - Pieces shared with training

    /// Token (and learned position) embeddings, scaled and projected to the hidden width.
    func embed(_ input: ForwardInput) -> Tensor {
        let c = configuration, rows = input.tokens.count
        let embedded = backend.empty([rows, weights.tokenEmbedding.shape.last], .f32, .activations)
        backend.embedding(embedded, weights.tokenEmbedding, tokens: input.tokens)
        if c.embeddingScale != 1 { backend.scale(embedded, by: c.embeddingScale) }
        var x = embedded
        if let projectIn = weights.projectIn {
            x = backend.empty([rows, c.hiddenSize], .f32, .activations)
            backend.linear(x, embedded, projectIn.weight, bias: projectIn.bias)
        }
        if let table = weights.positionEmbedding {
            let learned = backend.empty([rows, c.hiddenSize], .f32, .activations)
            backend.embedding(learned, table, tokens: input.positions.map { $0 + Int32(c.positionOffset) })
            backend.add(x, x, learned)
        }
        return backend.converted(x, to: input.activations)
    }

    /// The final norm and OPT's projection out: the hidden states the head reads (f32).
    func finish(_ x: Tensor) -> Tensor {
        var x = backend.converted(x, to: .f32)
        if let norm = weights.finalNorm { x = normalize(x, norm) }
        if let projectOut = weights.projectOut {
            let projected = backend.empty([x.shape.rows, projectOut.outputs], .f32, .activations)
            backend.linear(projected, x, projectOut.weight, bias: projectOut.bias)
            x = projected
        }
        return x
    }

    /// One block: pre-norm `x + A(N1(x))`, `m + M(N2(m))`, or post-norm (OPT-350m)
    /// `N1(x + A(x))`, `N2(m + M(m))`. Fills `tape` with what backward needs when given.
    func blockForward(_ index: Int, _ x: Tensor, _ input: ForwardInput, cache: KVCache?, tape: BlockTape?) -> Tensor {
        blockPass(index, x, input, cache: cache, tape: tape, output: true)!
    }

    /// Block `index` run again from its checkpointed input `x`, for its backward: only `tape` is
    /// wanted. Pre-norm, that backward reads neither the block's output nor the down projection's,
    /// so neither is computed (the down projection runs only its LoRA branch's narrow hidden):
    /// about a quarter of a Llama block's GEMMs.
    func recomputeBlock(_ index: Int, _ x: Tensor, _ input: ForwardInput, tape: BlockTape) {
        _ = blockPass(index, x, input, cache: nil, tape: tape, output: !configuration.normBeforeBlock)
    }

    /// `blockForward`, stopping before the down projection's output when `output` is false.
    private func blockPass(_ index: Int, _ x: Tensor, _ input: ForwardInput, cache: KVCache?, tape: BlockTape?,
                           output: Bool) -> Tensor? {
        let block = weights.blocks[index], preNorm = configuration.normBeforeBlock
        let h1 = preNorm ? normalize(x, block.attentionNorm) : x
        let attended = attention(block, index: index, h1, input, cache: cache, tape: tape)
        // s1 = x + attended, normalized in the same pass: the MLP's input (pre-norm), or mid (post-norm).
        let s1 = backend.empty(x.shape, x.dtype, .activations)
        let normed = normalize(x, plus: attended, into: s1, preNorm ? block.mlpNorm : block.attentionNorm)
        let mid = preNorm ? s1 : normed
        let h2 = normed
        if let tape {
            tape.input = x; tape.s1 = s1
            tape.h1 = [block.query, block.key, block.value].contains(where: Self.keepsInput) ? h1 : nil
            tape.h2 = block.mlpInputs.contains(where: Self.keepsInput) ? h2 : nil
        }
        guard let mlpOut = mlp(block, h2, tape: tape, output: output) else { return nil }
        let s2 = backend.empty(x.shape, x.dtype, .activations)
        let out: Tensor
        if preNorm {
            backend.add(s2, mid, mlpOut)
            out = s2
        } else {
            out = normalize(mid, plus: mlpOut, into: s2, block.mlpNorm)
        }
        tape?.s2 = s2
        return out
    }

    private func attention(_ block: BlockWeights, index: Int, _ h: Tensor, _ input: ForwardInput, cache: KVCache?,
                           tape: BlockTape?) -> Tensor {
        let c = configuration, length = input.length
        let q = project(h, block.query, .q, tape), k = project(h, block.key, .k, tape)
        let v = project(h, block.value, .v, tape)
        if c.usesRotaryPositions {
            backend.rope(q, heads: c.heads, headDim: c.headDim, positions: input.positions, inverseFrequencies: inverseFrequencies)
            backend.rope(k, heads: c.kvHeads, headDim: c.headDim, positions: input.positions, inverseFrequencies: inverseFrequencies)
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
        let layout = attentionLayout(input, keyLength: keyLength, queryOffset: offset)
        let attended = backend.empty(q.shape, q.dtype, .activations)
        // Training keeps each query row's log-sum-exp (a few KiB a layer) so the backward need not
        // run the attention forward again.
        let keepsStatistics = tape != nil && backend.usesAttentionStatistics
        let logSumExp = keepsStatistics ? backend.empty([layout.batch * layout.heads * layout.queryLength], .f32, .activations) : nil
        backend.attention(attended, q: q, k: keys, v: values, layout: layout, logSumExp: logSumExp)
        if let tape { tape.q = q; tape.k = k; tape.v = v; tape.attended = attended; tape.logSumExp = logSumExp }
        return project(attended, block.output, .o, tape)
    }

    func attentionLayout(_ input: ForwardInput, keyLength: Int, queryOffset: Int) -> AttentionLayout {
        let c = configuration
        return AttentionLayout(batch: input.batch, queryLength: input.length, keyLength: keyLength, queryOffset: queryOffset,
                               heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim,
                               scale: 1 / Float(c.headDim).squareRoot(), segments: input.segments)
    }

    /// The MLP's output, or with `output` false only what its backward reads (`recomputeBlock`).
    private func mlp(_ block: BlockWeights, _ h: Tensor, tape: BlockTape?, output: Bool) -> Tensor? {
        let up = project(h, block.up, .up, tape)
        let product = backend.empty(up.shape, up.dtype, .activations)
        if let gate = block.gate {
            let g = project(h, gate, .gate, tape)
            backend.gated(product, gate: g, up: up, configuration.activation)
            tape?.gate = g
        } else {
            backend.activate(product, up, configuration.activation)
        }
        if let tape {
            let outputOnly = block.gate == nil && configuration.activation.derivativeFromOutput
            tape.up = outputOnly ? nil : up
            tape.product = outputOnly || Self.keepsInput(block.down) ? product : nil
        }
        guard output else {
            loraHidden(product, block.down, .down, tape)
            return nil
        }
        return project(product, block.down, .down, tape)
    }

    /// Whether `linear`'s backward reads its input: for an enabled adapter's gradients, or a
    /// weight or bias that trains (a full fine-tune loads its weights as `trainable` memory).
    static func keepsInput(_ linear: Linear) -> Bool {
        linear.lora?.enabled == true || linear.weight.storage.category == .trainable || linear.bias?.storage.category == .trainable
    }

    /// `x·Wᵀ + b`, plus the LoRA branch `s · dropout(x)·Aᵀ·Bᵀ` when an enabled adapter is attached
    /// (the tape keeps the scaled hidden `s·dropout(x)·Aᵀ`). The branch goes first, so the base
    /// GEMM adds onto it as it writes (`accumulate`): the wide output is written once and read
    /// once, not written, read and written again.
    func project(_ x: Tensor, _ linear: Linear, _ role: ProjectionRole, _ tape: BlockTape?) -> Tensor {
        let out = backend.empty([x.shape.rows, linear.outputs], x.dtype, .activations)
        guard let lora = linear.lora, let hidden = loraHidden(x, linear, role, tape) else {
            backend.linear(out, x, linear.weight, bias: linear.bias)
            return out
        }
        backend.linear(out, hidden, lora.b, bias: nil)
        backend.linear(out, x, linear.weight, bias: linear.bias, accumulate: true)
        return out
    }

    /// The LoRA branch's narrow hidden `s·dropout(x)·Aᵀ` (rows × rank) of `linear`'s enabled
    /// adapter, kept on `tape` with its input and dropout mask; nil without one.
    @discardableResult
    private func loraHidden(_ x: Tensor, _ linear: Linear, _ role: ProjectionRole, _ tape: BlockTape?) -> Tensor? {
        guard let lora = linear.lora, lora.enabled else { return nil }
        var input = x, mask: Tensor?
        if let tape, tape.training, lora.dropout > 0 {
            let m = tape.dropoutMask(x.shape, x.dtype, keep: 1 - lora.dropout, on: backend)
            input = backend.empty(x.shape, x.dtype, .activations)
            backend.multiply(input, x, m)
            mask = m
        }
        // The scale goes on the narrow hidden (rows × rank), not on the wide output.
        let hidden = backend.empty([x.shape.rows, lora.rank], x.dtype, .activations)
        backend.linear(hidden, input, lora.a, bias: nil)
        backend.scale(hidden, by: lora.scale)
        tape?.lora[role] = LoRATape(input: input, hidden: hidden, mask: mask)
        return hidden
    }

    /// `norm(x)`, or `norm(x + residual)` with the sum written to `sum` (one pass on the device).
    func normalize(_ x: Tensor, plus residual: Tensor? = nil, into sum: Tensor? = nil, _ norm: Norm) -> Tensor {
        let out = backend.empty(x.shape, x.dtype, .activations)
        if let bias = norm.bias {
            backend.layerNorm(out, sum: sum, x, residual: residual, norm.weight, bias, eps: configuration.normEps)
        } else {
            backend.rmsNorm(out, sum: sum, x, residual: residual, norm.weight, eps: configuration.normEps,
                            weightOffset: configuration.normWeightOffset)
        }
        return out
    }
}

/// The token layout of one forward pass.
struct ForwardInput {
    var tokens: [Int32]
    var batch: Int
    /// Position of each token (restarting per packed sample).
    var positions: [Int32]
    /// Segment id of each token (packing), or nil for one sample per row.
    var segments: [Int32]? = nil
    /// The dtype the blocks store their activations in (the embedding's output is converted to it;
    /// the final hidden states come back in f32).
    var activations: DType = .f32

    var length: Int { tokens.count / batch }
}
