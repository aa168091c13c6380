// Decoder training: forward with saved activations, loss, and the explicit backward of every block.
import FrugalCore
import FrugalFormats

/// Sequences to train on: tokens, their labels, and the packing layout.
public struct TrainingBatch: Sendable {
    /// (batch·length) token ids.
    public var tokens: [Int32]
    /// (batch·length) the token each position must predict (already shifted); < 0 is ignored.
    public var targets: [Int32]
    /// (batch·length) position of each token, restarting per packed sample.
    public var positions: [Int32]
    /// (batch·length) segment of each token for packing (-1 for padding), or nil.
    public var segments: [Int32]?
    public var batch: Int

    public init(tokens: [Int32], targets: [Int32], positions: [Int32]? = nil, segments: [Int32]? = nil, batch: Int) {
        precondition(tokens.count == targets.count && tokens.count % batch == 0, "batch of \(tokens.count) tokens, \(targets.count) targets")
        let length = tokens.count / batch
        self.tokens = tokens
        self.targets = targets
        self.positions = positions ?? (0..<tokens.count).map { Int32($0 % length) }
        self.segments = segments
        self.batch = batch
    }

    /// Number of positions that carry a loss.
    public var targetCount: Int { targets.reduce(0) { $0 + ($1 >= 0 ? 1 : 0) } }
}

/// A forward pass kept for backward: the final hidden states (batch·length, embedding dim)
/// and the saved activations.
public struct TrainingPass: @unchecked Sendable {
    /// Hidden states the output head reads.
    public let hidden: Tensor
    let input: ForwardInput
    /// The tapes of blocks `firstBackwardBlock...`, in order; the blocks below ran forward only.
    let tapes: [BlockTape]
    let firstBackwardBlock: Int
    let finish: Decoder.FinishTape
}

/// How one forward/backward pass runs.
public struct PassOptions: Sendable {
    /// Keep only each block's input and recompute the block in backward.
    public var checkpointing = false
    /// With checkpointing, move each kept block input to host memory (`Backend.offload`) until
    /// backward recomputes that block.
    public var offloadActivations = false
    /// Multiplies the gradient of the summed loss (1/target tokens of the whole accumulated
    /// batch, times the loss scale under fp16).
    public var gradientScale: Float = 1
    /// Apply LoRA dropout.
    public var training = true
    /// The dtype the blocks store their forward activations in (f32, f16 or bf16); gradients and
    /// the hidden states the loss reads are f32 whatever it is.
    public var activations: DType = .f32

    public init(checkpointing: Bool = false, offloadActivations: Bool = false, gradientScale: Float = 1, training: Bool = true,
                activations: DType = .f32) {
        precondition(checkpointing || !offloadActivations, "activation offload moves checkpointed block inputs: it needs checkpointing")
        precondition([.f32, .f16, .bf16].contains(activations), "activations are stored in f32, f16 or bf16, not \(activations)")
        self.checkpointing = checkpointing; self.offloadActivations = offloadActivations
        self.gradientScale = gradientScale; self.training = training; self.activations = activations
    }
}

extension Decoder {
    /// The backend as one that trains.
    /// - Throws: `FrugalError.invalidArgument` naming the device when its backend cannot train.
    public func trainingBackend() throws -> TrainingBackend {
        guard let backend = backend as? TrainingBackend else {
            throw FrugalError.invalidArgument("the \(backend.device.rawValue) backend cannot train")
        }
        return backend
    }

    /// The summed cross-entropy (nats) over the batch's target tokens, without gradients.
    public func loss(_ batch: TrainingBatch) -> Double {
        guard let backend = backend as? TrainingBackend else { preconditionFailure("backend cannot compute the loss") }
        let input = ForwardInput(tokens: batch.tokens, batch: batch.batch, positions: batch.positions, segments: batch.segments)
        var x = embed(input)
        for index in weights.blocks.indices { x = blockForward(index, x, input, cache: nil, tape: nil) }
        return backend.crossEntropy(hidden: finish(x), head: weights.head, targets: batch.targets, dHidden: nil, dHead: nil,
                                    gradientScale: 0)
    }

    /// Forward and backward over `batch`, adding the gradients of `gradientScale · loss` into
    /// `parameters`' buffers (`+=`, so micro-batches accumulate).
    /// - Parameters:
    ///   - random: the dropout stream, advanced by the pass.
    ///   - timer: marks the end of forward (with the loss) and of backward.
    ///   - blockDone: as for `backward`.
    /// - Returns: the summed cross-entropy (nats) over the target tokens, unscaled.
    public func accumulateGradients(_ batch: TrainingBatch, into parameters: TrainableParameters, options: PassOptions,
                                    random: inout SplitMix64, timer: PhaseTimer? = nil,
                                    blockDone: ((Int) -> Void)? = nil) -> Double {
        guard let backend = backend as? TrainingBackend else { preconditionFailure("backend cannot train") }
        let pass = forwardForTraining(batch, training: parameters, options: options, random: &random)
        let dHidden = backend.empty(pass.hidden.shape, .f32, .activations)
        let loss = backend.crossEntropy(hidden: pass.hidden, head: weights.head, targets: batch.targets, dHidden: dHidden,
                                        dHead: parameters.gradient(of: weights.head), gradientScale: options.gradientScale)
        timer?.mark(.forward)
        backward(consume dHidden, consume pass, into: parameters, blockDone: blockDone)
        timer?.mark(.backward)
        return loss
    }

    /// Forward over `batch` keeping what backward needs; the returned hidden states (before the
    /// output head) let other losses than next-token cross-entropy train the model (a reward
    /// head, DPO's sequence log-probabilities).
    ///
    /// The blocks below `firstBackwardBlock(parameters)` run forward only and keep nothing: no
    /// gradient flows back through them.
    /// - Parameters:
    ///   - parameters: what the pass's backward will train.
    ///   - random: the dropout stream, advanced by the pass.
    public func forwardForTraining(_ batch: TrainingBatch, training parameters: TrainableParameters, options: PassOptions,
                                   random: inout SplitMix64) -> TrainingPass {
        let input = ForwardInput(tokens: batch.tokens, batch: batch.batch, positions: batch.positions, segments: batch.segments,
                                 activations: options.activations)
        var x = embed(input)
        let first = firstBackwardBlock(parameters)
        for index in 0..<first { x = blockForward(index, x, input, cache: nil, tape: nil) }
        var tapes = [BlockTape]()
        for index in first..<weights.blocks.count {
            let tape = BlockTape(training: options.training, random: random)
            x = blockForward(index, x, input, cache: nil, tape: tape)
            random = tape.random
            // With checkpointing, keep the block input only (on the host when offloading); the block
            // is recomputed in backward.
            tapes.append(options.checkpointing ? tape.checkpoint(offloadingTo: options.offloadActivations ? backend : nil) : tape)
        }
        let (hidden, finalTape) = finishWithTape(x)
        return TrainingPass(hidden: hidden, input: input, tapes: tapes, firstBackwardBlock: first, finish: finalTape)
    }

    /// The lowest block whose backward `parameters` need: 0 when an embedding trains, else the
    /// lowest block with a trained parameter or an enabled adapter (whose forward under training
    /// draws dropout from the pass's stream), or the block count when none has.
    /// `--freeze-layers 0,1,…` on LoRA then saves the lower blocks' tapes and backward.
    public func firstBackwardBlock(_ parameters: TrainableParameters) -> Int {
        let embeddings = [weights.tokenEmbedding, weights.positionEmbedding, weights.projectIn?.weight, weights.projectIn?.bias]
        if embeddings.contains(where: { parameters.gradient(of: $0) != nil }) { return 0 }
        let trained = parameters.parameters.compactMap(\.block).min() ?? weights.blocks.count
        let adapted = weights.blocks.indices.first { index in
            ProjectionRole.allCases.contains { weights.blocks[index][$0]?.lora?.enabled == true }
        }
        return min(trained, adapted ?? weights.blocks.count)
    }

    /// Backward from the gradient of the hidden states a `forwardForTraining` returned,
    /// accumulating parameter gradients (+=). A pass can be backpropagated once.
    ///
    /// Pass both with `consume` (`decoder.backward(consume dHidden, consume pass, …)`): the hidden
    /// states, their gradient and the final norm's activations are then freed once the head's
    /// backward is done, and each block's tape once its backward is, instead of living through the
    /// whole backward.
    /// - Parameter blockDone: called with a block's index as soon as that block's gradients are
    ///   complete (blocks finish last to first), before any other block's backward writes to them.
    public func backward(_ dHidden: consuming Tensor, _ pass: consuming TrainingPass, into parameters: TrainableParameters,
                         blockDone: ((Int) -> Void)? = nil) {
        guard let backend = backend as? TrainingBackend else { preconditionFailure("backend cannot train") }
        let input = pass.input, finish = pass.finish
        var tapes = pass.tapes
        let first = pass.firstBackwardBlock
        _ = consume pass
        var dx = finishBackward(consume dHidden, consume finish, parameters, backend)
        for index in (first..<weights.blocks.count).reversed() {
            var tape = tapes.removeLast()
            // The next block's input crosses back while this block is recomputed and differentiated.
            if let next = tapes.last?.offloaded { backend.prefetch(next) }
            if tape.s1 == nil {
                let recomputed = BlockTape(training: tape.training, random: tape.random)
                recomputeBlock(index, tape.offloaded.map(backend.restore) ?? tape.input, input, tape: recomputed)
                tape = recomputed
            }
            dx = blockBackward(index, dx, tape, input, parameters, backend)
            blockDone?(index)
        }
        if first == 0 { embedBackward(dx, input, parameters, backend) }
    }

    // MARK: - Ends of the network

    /// What `finish` computed, for its backward.
    struct FinishTape {
        var beforeNorm: Tensor
        var normed: Tensor
    }

    /// The blocks' output widened to f32, then `finish`, keeping what its backward reads.
    private func finishWithTape(_ blocksOut: Tensor) -> (Tensor, FinishTape) {
        let x = backend.converted(blocksOut, to: .f32)
        var normed = x
        if let norm = weights.finalNorm { normed = normalize(x, norm) }
        var hidden = normed
        if let projectOut = weights.projectOut {
            hidden = backend.empty([x.shape.rows, projectOut.outputs], .f32, .activations)
            backend.linear(hidden, normed, projectOut.weight, bias: projectOut.bias)
        }
        return (hidden, FinishTape(beforeNorm: x, normed: normed))
    }

    private func finishBackward(_ dHidden: Tensor, _ tape: FinishTape, _ parameters: TrainableParameters,
                                _ backend: TrainingBackend) -> Tensor {
        var d = dHidden
        if let projectOut = weights.projectOut {
            d = linearBackward(dHidden, tape.normed, projectOut, nil, parameters, backend)
        }
        if let norm = weights.finalNorm { d = normBackward(d, tape.beforeNorm, norm, parameters, backend) }
        return d
    }

    private func embedBackward(_ dx: Tensor, _ input: ForwardInput, _ parameters: TrainableParameters, _ backend: TrainingBackend) {
        let c = configuration
        if let table = weights.positionEmbedding, let dTable = parameters.gradient(of: table) {
            backend.embeddingBackward(dTable, dy: dx, tokens: input.positions.map { $0 + Int32(c.positionOffset) })
        }
        guard let dTable = parameters.gradient(of: weights.tokenEmbedding) else { return }
        var dEmbedded = dx
        if let projectIn = weights.projectIn {
            let embedded = backend.empty([input.tokens.count, weights.tokenEmbedding.shape.last], .f32, .activations)
            backend.embedding(embedded, weights.tokenEmbedding, tokens: input.tokens)
            if c.embeddingScale != 1 { backend.scale(embedded, by: c.embeddingScale) }
            dEmbedded = linearBackward(dx, embedded, projectIn, nil, parameters, backend)
        } else if c.embeddingScale != 1 {
            dEmbedded = backend.empty(dx.shape, .f32, .activations)
            backend.copy(dEmbedded, at: 0, from: dx)
        }
        if c.embeddingScale != 1 { backend.scale(dEmbedded, by: c.embeddingScale) }
        backend.embeddingBackward(dTable, dy: dEmbedded, tokens: input.tokens)
    }

    // MARK: - Block backward

    /// Backward of `blockForward`: returns the gradient of the block input (=), accumulating
    /// parameter gradients (+=).
    private func blockBackward(_ index: Int, _ dOut: Tensor, _ tape: BlockTape, _ input: ForwardInput,
                               _ parameters: TrainableParameters, _ backend: TrainingBackend) -> Tensor {
        let block = weights.blocks[index], preNorm = configuration.normBeforeBlock, c = configuration
        let dS1 = mlpBackward(index, dOut, tape, parameters, backend)
        // Attention
        let dAttended = linearBackward(dS1, tape.attended, block.output, tape.lora[.o], parameters, backend)
        let dq = backend.empty(tape.q.shape, .f32, .activations)
        let dk = backend.empty(tape.k.shape, .f32, .activations), dv = backend.empty(tape.v.shape, .f32, .activations)
        backend.attentionBackward(dq: dq, dk: dk, dv: dv, dOut: dAttended, q: tape.q, k: tape.k, v: tape.v,
                                  layout: attentionLayout(input, keyLength: input.length, queryOffset: 0),
                                  out: tape.attended, logSumExp: tape.logSumExp)
        if c.usesRotaryPositions {
            backend.ropeBackward(dq, heads: c.heads, headDim: c.headDim, positions: input.positions, inverseFrequencies: inverseFrequencies)
            backend.ropeBackward(dk, heads: c.kvHeads, headDim: c.headDim, positions: input.positions, inverseFrequencies: inverseFrequencies)
        }
        let dH1 = projectionBackward(dq, tape.h1, block.query, .q, tape, parameters, backend)
        projectionBackward(dk, tape.h1, block.key, .k, tape, parameters, backend, into: dH1)
        projectionBackward(dv, tape.h1, block.value, .v, tape, parameters, backend, into: dH1)
        // s1 = x + A(h1)
        let dx = backend.empty(dS1.shape, .f32, .activations)
        if preNorm {
            backend.add(dx, dS1, normBackward(dH1, tape.input, block.attentionNorm, parameters, backend))
        } else {
            backend.add(dx, dS1, dH1)
        }
        return dx
    }

    /// Backward of a block's MLP half, from the gradient of the block's output to that of `s1`
    /// (=), accumulating parameter gradients (+=). Its MLP-wide gradients are freed on return,
    /// before the attention's backward allocates its own.
    private func mlpBackward(_ index: Int, _ dOut: Tensor, _ tape: BlockTape, _ parameters: TrainableParameters,
                             _ backend: TrainingBackend) -> Tensor {
        let block = weights.blocks[index], preNorm = configuration.normBeforeBlock
        // out = s2 (pre-norm) or N2(s2)
        let dS2 = preNorm ? dOut : normBackward(dOut, tape.s2, block.mlpNorm, parameters, backend)
        let dH2 = mlpInputGradient(index, dS2, tape, parameters, backend)
        // s2 = mid + M(h2)
        let dMid = backend.empty(dS2.shape, .f32, .activations)
        if preNorm {
            let dFromNorm = normBackward(dH2, tape.s1, block.mlpNorm, parameters, backend)
            backend.add(dMid, dS2, dFromNorm)
        } else {
            backend.add(dMid, dS2, dH2)
        }
        // mid = s1 (pre-norm) or N1(s1)
        return preNorm ? dMid : normBackward(dMid, tape.s1, block.attentionNorm, parameters, backend)
    }

    /// The gradient of the MLP's input h2 (=), from that of its output, with the parameter
    /// gradients of its projections (+=); every MLP-wide gradient is freed on return.
    private func mlpInputGradient(_ index: Int, _ dOut: Tensor, _ tape: BlockTape, _ parameters: TrainableParameters,
                                  _ backend: TrainingBackend) -> Tensor {
        let block = weights.blocks[index]
        let (dGate, dUp) = activationGradients(index, dOut, tape, parameters, backend)
        guard let gate = block.gate, let dGate else { return projectionBackward(dUp, tape.h2, block.up, .up, tape, parameters, backend) }
        let dH2 = projectionBackward(dGate, tape.h2, gate, .gate, tape, parameters, backend)
        projectionBackward(dUp, tape.h2, block.up, .up, tape, parameters, backend, into: dH2)
        return dH2
    }

    /// The gradients of the MLP's gate (when gated) and up outputs, from that of its output: back
    /// through the down projection, then the activation. They are written in the dtype the
    /// projections' GEMMs read (`gradientOperandType`: 16 bits on a GPU under 16-bit activations,
    /// the f32 product gradient then freed on return); in f32, the gate's overwrites the product's.
    private func activationGradients(_ index: Int, _ dOut: Tensor, _ tape: BlockTape, _ parameters: TrainableParameters,
                                     _ backend: TrainingBackend) -> (gate: Tensor?, up: Tensor) {
        let block = weights.blocks[index], activation = configuration.activation
        let dProduct = projectionBackward(dOut, tape.product, block.down, .down, tape, parameters, backend)
        let type = gradientType(of: block.mlpInputs, activations: tape.activations, parameters, backend)
        if let g = tape.gate, let up = tape.up {
            let dGate = type == .f32 ? dProduct : backend.empty(g.shape, type, .activations)
            let dUp = backend.empty(g.shape, type, .activations)
            backend.gatedBackward(dGate: dGate, dUp: dUp, dy: dProduct, gate: g, up: up, activation)
            return (dGate, dUp)
        }
        // relu's derivative from the product when up was not kept (`BlockTape.up`)
        guard let x = tape.up ?? tape.product else { preconditionFailure("the MLP's tape keeps neither up nor the product") }
        let dUp = type == .f32 ? dProduct : backend.empty(x.shape, type, .activations)
        backend.activateBackward(dx: dUp, dy: dProduct, x: x, activation)
        return (nil, dUp)
    }

    /// The dtype in which every one of `linears` (reading inputs in `activations`) may take its
    /// output gradient: `gradientOperandType` when all agree and none trains a bias (whose gradient
    /// sums f32 rows), else f32.
    private func gradientType(of linears: [Linear], activations: DType, _ parameters: TrainableParameters,
                              _ backend: TrainingBackend) -> DType {
        let types = Set(linears.map { linear -> DType in
            guard parameters.gradient(of: linear.bias) == nil else { return .f32 }
            let adapter = linear.lora.flatMap { $0.enabled ? $0.b : nil }
            return backend.gradientOperandType(activations: activations, weights: [linear.weight] + (adapter.map { [$0] } ?? []))
        })
        return types.count == 1 ? types.first! : .f32
    }

    /// `linearBackward` of a block's projection `role`, whose input `x` the tape kept only when this
    /// backward reads it (`keepsInput`); without it, only the input gradient passes (`inputGradient`).
    @discardableResult
    private func projectionBackward(_ dy: Tensor, _ x: Tensor?, _ linear: Linear, _ role: ProjectionRole, _ tape: BlockTape,
                                    _ parameters: TrainableParameters, _ backend: TrainingBackend, into sum: Tensor? = nil) -> Tensor {
        if let x { return linearBackward(dy, x, linear, tape.lora[role], parameters, backend, into: sum) }
        precondition(tape.lora[role] == nil && parameters.gradient(of: linear.weight) == nil && parameters.gradient(of: linear.bias) == nil,
                     "the \(role) projection trains, but its input was not kept: train the weights loaded as trainable")
        let dx = sum ?? backend.empty([dy.shape.rows, linear.inputs], .f32, .activations)
        backend.inputGradient(dx: dx, dy: dy, weight: linear.weight, activations: tape.activations, accumulate: sum != nil)
        return dx
    }

    /// Backward of `project`: the input gradient (= in a new tensor, or += into `sum`), with weight,
    /// bias and LoRA gradients (+=). The LoRA branch goes first, so the base GEMM adds its input
    /// gradient onto the branch's as it writes: the wide f32 gradient is written once and read
    /// once, not written, read and written again.
    @discardableResult
    private func linearBackward(_ dy: Tensor, _ x: Tensor, _ linear: Linear, _ lora: LoRATape?,
                                _ parameters: TrainableParameters, _ backend: TrainingBackend, into sum: Tensor? = nil) -> Tensor {
        let dx = sum ?? backend.empty(x.shape, .f32, .activations)
        var accumulate = sum != nil, dy = dy
        if let adapter = linear.lora, adapter.enabled, let lora {
            // The base and the branch read dy alike: a GPU rounds it once for both (no bias gradient).
            if parameters.gradient(of: linear.bias) == nil {
                dy = backend.gradientOperand(dy, activations: x.dtype, weights: [linear.weight, adapter.b])
            }
            // The tape's hidden is already scaled: dB += dyᵀ·(s·h); d(s·h) = dy·B, so dh = s·dy·B.
            let dHidden = backend.empty(lora.hidden.shape, .f32, .activations)
            backend.linearBackward(dx: dHidden, dWeight: parameters.gradient(of: adapter.b), dBias: nil, dy: dy,
                                   x: lora.hidden, weight: adapter.b)
            backend.scale(dHidden, by: adapter.scale)
            if let mask = lora.mask {
                // Dropout: the input gradient passes the mask before it joins dx.
                let dInput = accumulate ? backend.empty(x.shape, .f32, .activations) : dx
                backend.linearBackward(dx: dInput, dWeight: parameters.gradient(of: adapter.a), dBias: nil, dy: dHidden,
                                       x: lora.input, weight: adapter.a)
                backend.multiply(dInput, dInput, backend.converted(mask, to: .f32))
                if accumulate { backend.add(dx, dx, dInput) }
            } else {
                backend.linearBackward(dx: dx, dWeight: parameters.gradient(of: adapter.a), dBias: nil, dy: dHidden,
                                       x: lora.input, weight: adapter.a, accumulate: accumulate)
            }
            accumulate = true
        }
        backend.linearBackward(dx: dx, dWeight: parameters.gradient(of: linear.weight),
                               dBias: parameters.gradient(of: linear.bias), dy: dy, x: x, weight: linear.weight,
                               accumulate: accumulate)
        return dx
    }

    /// Backward of `normalize`: the input gradient (=), with weight and bias gradients (+=).
    private func normBackward(_ dy: Tensor, _ x: Tensor, _ norm: Norm, _ parameters: TrainableParameters,
                              _ backend: TrainingBackend) -> Tensor {
        let dx = backend.empty(x.shape, .f32, .activations)
        if let bias = norm.bias {
            backend.layerNormBackward(dx: dx, dWeight: parameters.gradient(of: norm.weight), dBias: parameters.gradient(of: bias),
                                      dy: dy, x: x, weight: norm.weight, eps: configuration.normEps)
        } else {
            backend.rmsNormBackward(dx: dx, dWeight: parameters.gradient(of: norm.weight), dy: dy, x: x, weight: norm.weight,
                                    eps: configuration.normEps, weightOffset: configuration.normWeightOffset)
        }
        return dx
    }
}

extension BlockTape {
    /// A tape holding only the block input and the dropout stream at the block's start; the input
    /// moved to host memory when `backend` is given.
    func checkpoint(offloadingTo backend: Backend?) -> BlockTape {
        let kept = BlockTape(training: training, random: startRandom)
        if let backend { kept.offloaded = backend.offload(input, dropping: true) } else { kept.input = input }
        return kept
    }
}
