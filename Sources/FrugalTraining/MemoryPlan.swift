// MemoryPlan: a fine-tuning configuration's peak memory by category, and its compute per token,
// predicted from the tensors the engine allocates — before any weight is loaded.
import Foundation
import FrugalCore
import FrugalFormats
import FrugalModels

/// The predicted peak memory of one fine-tuning configuration, by `MemoryCategory` as the
/// `MemoryLedger` counts it, and the compute a trained token costs.
///
/// Every figure counts tensors the engine allocates (`Decoder.forwardForTraining`, `BlockTape`,
/// `TrainableParameters`, `Optimizer`, the backends' scratch buffers):
/// - weights: the frozen base's matrices in their stored dtype (block projections in the
///   quantized type when quantized on load and their rows are whole blocks), norms and biases in
///   f32; none in a full fine-tune, whose weights are all trainable;
/// - trainable: LoRA's `A` and `B` in f32, or every weight in f32 in a full fine-tune; in 16
///   bits (2 bytes a value) under fp16, bf16 and pure bf16, LoRA and full alike — but fp16 and
///   bf16 create (or load) them in f32 first, so their peak there is 4 bytes a value, at set-up;
/// - gradients: one f32 value per trainable value;
/// - optimizer: AdamW's first and second moments in f32 per trainable value (8-bit AdamW's in
///   260-byte blocks of 256 values, per tensor; SGD's momentum buffer in f32), plus an f32
///   master copy under fp16 and bf16;
/// - activations: `batch × seq` rows, forward's in the activation dtype, gradients in f32. Without checkpointing every block's tape is live when
///   backward starts (block input, normed inputs, q, k, v, attention output and, on the GPU, its log-sum-exp, the
///   residual sums, up, gate and their product (a plain relu MLP: the product alone), each adapter's hidden); with it, only each
///   block's input, plus the one block being recomputed (without its output). Then the final norm's output, the
///   hidden-state gradient, and the deepest point of a block's backward (the MLP's gradients, or
///   the attention's at the block's end);
/// - workspace: on the GPU the cuBLASLt workspace and the attention backward's packed heads and
///   chunk of scores; on the CPU the cross-entropy's chunk of logits, or the attention
///   backward's per-worker scratch (and under pure bf16 the f32 copy of the trainable weight a
///   GEMM reads, widened whole).
///
/// Offloaded (`hostPeak`): with the optimizer offloaded, its state and an f32 copy of every
/// trainable value (the master, or the weight itself) move to the host with one f32 buffer as long
/// as the largest trainable tensor for the gradient in transit, and the device holds no optimizer
/// memory; with activations offloaded, every checkpointed block input moves to the host and the
/// device keeps only the last block's output and the one input brought back for its block.
///
/// LoRA's frozen blocks (`frozenLayers`) have no adapters; those below the lowest adapted block
/// keep no tape and run no backward (`Decoder.firstBackwardBlock`).
///
/// Assumes no LoRA dropout (dropout keeps a mask and a dropped-out input per adapter), and one
/// micro-batch live at a time (gradient accumulation costs no memory).
public struct MemoryPlan: Sendable, Equatable {
    /// What to plan: the model's shape and how it trains.
    public struct Configuration: Sendable, Equatable {
        public var model: ModelConfiguration
        /// How the frozen base's matrices are stored (f32, f16, bf16 or a GGUF block type); a full
        /// fine-tune widens every weight to f32 whatever this says.
        public var baseDType: DType
        /// The packed type the base's block projections are quantized to on load (`nf4`, `q8_0`),
        /// or nil; ignored by a full fine-tune.
        public var quantize: DType?
        public var method: TrainingMethod
        public var precision: PrecisionPolicy
        public var optimizer: OptimizerKind
        /// Sequences per micro-batch.
        public var microBatch: Int
        /// Tokens per sequence.
        public var sequenceLength: Int
        public var checkpointing: Bool
        /// The optimizer step fused into backward with one block's gradient tensors shared by
        /// every block (`TrainingConfiguration.fusedOptimizerStep`).
        public var fusedOptimizerStep: Bool
        /// The optimizer's state and f32 weights in host memory (`TrainingConfiguration.offloadOptimizer`).
        public var offloadOptimizer: Bool
        /// Checkpointed block inputs in host memory (`TrainingConfiguration.offloadActivations`).
        public var offloadActivations: Bool
        /// The dtype forward activations are stored in; nil follows the precision
        /// (`TrainingConfiguration.activations`).
        public var activations: DType?
        /// The dtype forward activations are stored in.
        public var activationDType: DType { activations ?? precision.activationDType }
        /// The backend, whose scratch memory (workspace) differs.
        public var device: DeviceKind
        /// Blocks that get no LoRA adapters (`--freeze-layers`); a full fine-tune is planned with
        /// every block trained, whatever this says.
        public var frozenLayers: Set<Int>

        public init(model: ModelConfiguration, baseDType: DType = .f32, quantize: DType? = nil,
                    method: TrainingMethod = .lora(LoRAConfiguration()), precision: PrecisionPolicy = .fp32,
                    optimizer: OptimizerKind = .adamW, microBatch: Int = 8, sequenceLength: Int = 256,
                    checkpointing: Bool = false, fusedOptimizerStep: Bool = false, offloadOptimizer: Bool = false,
                    offloadActivations: Bool = false, activations: DType? = nil, device: DeviceKind = .cuda,
                    frozenLayers: Set<Int> = []) {
            self.model = model; self.baseDType = baseDType; self.quantize = quantize; self.method = method; self.precision = precision
            self.optimizer = optimizer; self.microBatch = microBatch; self.sequenceLength = sequenceLength
            self.checkpointing = checkpointing; self.fusedOptimizerStep = fusedOptimizerStep
            self.offloadOptimizer = offloadOptimizer; self.offloadActivations = offloadActivations
            self.activations = activations; self.device = device; self.frozenLayers = frozenLayers
        }
    }

    public let configuration: Configuration
    /// Predicted peak bytes of each category, each at its own peak.
    public let peak: [MemoryCategory: Int]
    /// Predicted peak bytes of host memory by category (the backend's `hostLedger`): what offloading
    /// moved off the device; empty without offload.
    public let hostPeak: [MemoryCategory: Int]
    /// Predicted peak of the sum over categories: the persistent categories plus the higher of a
    /// step's two high points, the loss (forward activations kept, logits workspace) and the
    /// deepest point of backward.
    public let peakTotal: Int
    /// Number of trainable values.
    public let trainableCount: Int
    /// Floating-point operations per trained token: 2 per multiply-add of every weight forward,
    /// as many again backward (twice as many when the weights train), attention's scores and
    /// mixing, and under checkpointing every block's forward once more (a pre-norm block's without
    /// its down projection).
    public let flopsPerToken: Double

    /// The prediction for `configuration`.
    /// - Throws: `FrugalError.invalidArgument` for an unknown LoRA target, a non-positive rank,
    ///   batch or sequence length, activation offload without checkpointing, or frozen layers
    ///   the model lacks or that leave LoRA nothing to train.
    public static func predict(_ configuration: Configuration) throws -> MemoryPlan {
        let c = configuration.model, rows = configuration.microBatch * configuration.sequenceLength
        guard configuration.microBatch > 0, configuration.sequenceLength > 0 else {
            throw FrugalError.invalidArgument("batch and sequence length must be positive")
        }
        guard configuration.checkpointing || !configuration.offloadActivations else {
            throw FrugalError.invalidArgument("activation offload moves checkpointed block inputs: it needs checkpointing")
        }
        let shapes = Shapes(c)
        var adapted = [Projection](), rank = 0
        if case let .lora(lora) = configuration.method {
            guard lora.rank > 0 else { throw FrugalError.invalidArgument("LoRA rank must be positive, found \(lora.rank)") }
            let roles = try ProjectionRole.parse(lora.targets)
            adapted = shapes.projections.filter { roles.contains($0.role) }
            rank = lora.rank
        }
        let full = configuration.method == .full
        // LoRA's adapted blocks, and the first whose backward runs: the blocks below keep no tape.
        let frozen = full ? [] : configuration.frozenLayers
        try c.checkFrozenLayers(frozen)
        guard let firstTaped = (0..<c.layers).first(where: { !frozen.contains($0) }) else {
            throw FrugalError.invalidArgument("every one of the \(c.layers) blocks is frozen: LoRA would train nothing")
        }
        let trainedBlocks = c.layers - frozen.count, taped = c.layers - firstTaped
        let highestTrained = (0..<c.layers).last { !frozen.contains($0) }!

        // Parameters: a frozen base with f32 adapters, or every weight f32 and trainable.
        let adapterValues = trainedBlocks * adapted.reduce(0) { $0 + rank * ($1.inputs + $1.outputs) }
        let trainableCount = full ? shapes.matrixValues.reduce(0, +) + shapes.vectorValues : adapterValues
        let weights = full ? 0 : shapes.storedBytes(configuration.baseDType, projections: configuration.quantize)
            + 4 * shapes.vectorValues
        let trainableBytes = configuration.precision.trainableDType.byteCount(elements: 1)!
        let trainable = trainableBytes * trainableCount
        // fp16 and bf16 create (or load) the trainable tensors in f32 and replace each, in order,
        // by its 16-bit compute copy as the optimizer takes its master: the category peaks at the
        // first replacement, every f32 tensor there and the first tensor's copy beside it (the
        // token embedding in a full fine-tune, the first adapter's A with LoRA).
        let createdBytes = configuration.precision.createdDType.byteCount(elements: 1)!
        let firstTensor = full ? c.vocabSize * (c.wordEmbedProjDim ?? c.hiddenSize) : rank * (adapted.first?.inputs ?? 0)
        let created = createdBytes * trainableCount + (createdBytes == trainableBytes ? 0 : trainableBytes * firstTensor)
        // Gradients: one per trainable value, or with the fused step one block's and those outside the blocks.
        let perBlock = full ? shapes.blockMultiplies + shapes.blockVectorValues
            : adapterValues / trainedBlocks
        let gradients = 4 * (configuration.fusedOptimizerStep ? trainableCount - (trainedBlocks - 1) * perBlock : trainableCount)
        // The optimizer's state, tensor by tensor (8-bit moments come in whole blocks), and f32 masters.
        let trainableTensors = full ? shapes.matrixValues + shapes.vectors
            : Array(repeating: adapted.flatMap { [rank * $0.inputs, $0.outputs * rank] }, count: trainedBlocks).flatMap { $0 }
        let state = trainableTensors.reduce(0) { $0 + configuration.optimizer.stateBytes(values: $1) }
        let optimizer = state + (configuration.precision.keepsMasters ? 4 * trainableCount : 0)
        // Offloaded, the host always keeps an f32 copy of every weight (pure bf16's too), and the
        // gradients of two consecutive groups of the update's pipeline (`Optimizer.offloadGroups`):
        // the blocks from the last to the first, then each tensor outside them.
        let groups = Array(repeating: perBlock, count: trainedBlocks) + (full ? shapes.outsideBlocks : [])
        let hostOptimizer = state + 4 * trainableCount
        let hostGradients = 4 * zip(groups, groups.dropFirst() + [0]).map { $0 + $1 }.max()!

        // Activations per token: forward's in the activation dtype (`stored` bytes a value), the
        // attention's statistics and every gradient in f32.
        let d = c.hiddenSize, q = c.heads * c.headDim, kv = c.kvHeads * c.headDim, mlp = c.intermediateSize
        let stored = configuration.activationDType.byteCount(elements: 1)!
        // One block's tape: s1 and the block's output (post-norm: s2 too), q, k, v, the attention
        // output, up and gate, each adapter's hidden, on the GPU the attention's log-sum-exp (one per
        // head; the CPU recomputes it), and the inputs of the projections that train
        // (`Decoder.keepsInput`): q, k and v's h1 (pre-norm; post-norm's is the block input), gate
        // and up's h2, down's product. A plain relu MLP keeps the product instead of up
        // (`Activation.derivativeFromOutput`). A frozen block's tape keeps no adapter's input or hidden.
        let outputOnly = !c.gatedMLP && c.activation.derivativeFromOutput
        let preActivations = (c.gatedMLP ? 2 : outputOnly ? 0 : 1) * mlp
        let statistics = configuration.device == .cuda ? c.heads : 0
        func tapeBytes(trained: Bool) -> Int {
            func keeps(_ roles: [ProjectionRole]) -> Bool { full || trained && adapted.contains { roles.contains($0.role) } }
            let inputs = (c.normBeforeBlock && keeps([.q, .k, .v]) ? d : 0) + (keeps([.gate, .up]) ? d : 0)
                + (outputOnly || keeps([.down]) ? mlp : 0) + (c.normBeforeBlock ? 0 : d)
            return stored * (2 * d + inputs + 2 * q + 2 * kv + preActivations + (trained ? rank * adapted.count : 0)) + 4 * statistics
        }
        let tape = tapeBytes(trained: true), frozenTapes = frozen.count - firstTaped
        // A block recomputed for its backward keeps no output (`Decoder.recomputeBlock`): the top
        // block's, or the highest trained block's with the checkpoints above it already freed.
        let recomputedTape = max(tapeBytes(trained: highestTrained == c.layers - 1) - stored * d,
                                 tape - stored * d - (configuration.offloadActivations ? 0 : stored * d * (c.layers - 1 - highestTrained)))
        // The embedding output, then every tape or, checkpointed, every block's output; offloaded, the
        // last block's output (the others on the host) and in backward the input brought back.
        // The last output stays in its block's tape only pre-norm without checkpointing (as s2);
        // otherwise it lives on as the final norm's input, or stored in 16 bits, only as the f32
        // copy widened from it.
        let lastOutputInTape = c.normBeforeBlock && !configuration.checkpointing
        let widened = stored < 4 ? d : 0
        let offloaded = configuration.offloadActivations ? taped * d : 0
        let keptValues = d + (configuration.checkpointing ? taped * d : 0) - (lastOutputInTape ? 0 : widened) - offloaded
        let kept = stored * keptValues
            + (configuration.checkpointing ? 0 : (taped - frozenTapes) * tape + frozenTapes * tapeBytes(trained: false))
        // f32: the widened output, the final norm's output and the gradient of the hidden states,
        // live from the loss until the head's backward is done (`Decoder.backward` consumes them).
        let ends = 4 * (widened + (c.finalNorm ? d : 0) + d)
        // The blocks' backward keeps the last block's output only in its tape: the final norm's
        // input went with the ends.
        let keptInBackward = kept - (lastOutputInTape ? 0 : stored * (d - widened))
        // Deepest point of a block's backward (f32 gradients): in the MLP, the incoming gradient,
        // the product's (which the gate's overwrites) and up's gradients, and that of the MLP's
        // input (the gate's and up's in 16 bits, the product's freed before the input's is made, when
        // their GEMMs read 16 bits); or, the MLP's gradients freed, in the attention: the incoming gradient and the
        // MLP's output gradient, the gradients of the attention output, q, k, v, of h1, its norm's
        // (pre-norm: post-norm's h1 is the block input) and the block input's.
        // On the GPU the gate's and up's gradients may be written in 16 bits (`mlpGradientsIn16Bits`):
        // the f32 product gradient then lives beside them until the activation's backward is done.
        let widths = (c.gatedMLP ? 2 : 1) * mlp
        let mlpDeepest = Self.mlpGradientsIn16Bits(configuration) ? max(4 * (d + mlp) + 2 * widths, 8 * d + 2 * widths)
            : 4 * (2 * d + widths)
        let backward = max(mlpDeepest, 4 * ((c.normBeforeBlock ? 5 : 4) * d + 2 * q + 2 * kv))
        // Offloaded, the block's input brought back, and the next block's on its way back meanwhile
        // (`Backend.prefetch`).
        let restored = configuration.offloadActivations ? 2 * stored * d : 0
        let atLoss = rows * (kept + ends)
        // The head's backward adds the final norm's input gradient to what the loss kept; the blocks'
        // backward holds the kept inputs, the one brought back, the block recomputed and its gradients.
        let activations = max(atLoss + rows * 4 * d,
                              rows * (keptInBackward + restored + (configuration.checkpointing ? recomputedTape : 0) + backward))

        let (lossWorkspace, backwardWorkspace) = workspace(configuration, rows: rows)
        let deviceOptimizer = configuration.offloadOptimizer ? 0 : optimizer
        let persistent = weights + trainable + gradients + deviceOptimizer
        var host = [MemoryCategory: Int]()
        if configuration.offloadOptimizer { host[.optimizer] = hostOptimizer; host[.gradients] = hostGradients }
        if configuration.offloadActivations { host[.activations] = stored * rows * offloaded }
        return MemoryPlan(
            configuration: configuration,
            peak: [.weights: weights, .trainable: max(trainable, created), .gradients: gradients, .optimizer: deviceOptimizer,
                   .activations: activations, .workspace: max(lossWorkspace, backwardWorkspace)],
            hostPeak: host,
            peakTotal: max(weights + created + gradients,
                           persistent + max(atLoss + lossWorkspace, activations + backwardWorkspace)),
            trainableCount: trainableCount,
            flopsPerToken: flops(configuration, shapes, adapterValues: adapterValues, full: full, taped: taped,
                                 downAdapted: adapted.contains { $0.role == .down } ? trainedBlocks * rank : 0))
    }

    /// The fastest of `plans` whose peak fits in `budget` bytes, or nil when none does: the fewest
    /// recomputations first (no checkpointing), then the largest micro-batch (fewer, fuller
    /// GEMMs per token), then the fewest FLOPs per token; ties go to the earlier plan.
    public static func fastest(_ plans: [MemoryPlan], fitting budget: Int) -> MemoryPlan? {
        plans.enumerated().filter { $0.element.peakTotal <= budget }.min { a, b in
            let x = a.element.configuration, y = b.element.configuration
            if x.checkpointing != y.checkpointing { return !x.checkpointing }
            if x.microBatch != y.microBatch { return x.microBatch > y.microBatch }
            if a.element.flopsPerToken != b.element.flopsPerToken { return a.element.flopsPerToken < b.element.flopsPerToken }
            return a.offset < b.offset
        }?.element
    }

    // MARK: - Pieces

    /// One projection of a block: its role and width.
    struct Projection {
        let role: ProjectionRole
        let inputs: Int
        let outputs: Int
    }

    /// The model's tensors by kind, as `DecoderWeights.random` and the loaders build them.
    struct Shapes {
        /// Each block's projections (with the gate only in a gated MLP).
        let projections: [Projection]
        /// Values of each matrix: embeddings, every block's projections, the head unless tied.
        let matrixValues: [Int]
        /// Values of the matrices that are not block projections (embeddings, OPT's, the head).
        let otherMatrixValues: [Int]
        let layers: Int
        /// Values of each norm and bias.
        let vectors: [Int]
        /// Values of each tensor outside the blocks, in the trainable set's order
        /// (`DecoderWeights.namedTensors`): embeddings, OPT's projections around the final norm,
        /// the final norm, the head unless tied.
        let outsideBlocks: [Int]
        /// Values of the norms and biases in all.
        var vectorValues: Int { vectors.reduce(0, +) }
        /// Values of one block's norms and biases.
        let blockVectorValues: Int
        /// Multiply-adds per token of one block's projections, and of the head.
        let blockMultiplies: Int, headMultiplies: Int

        init(_ c: ModelConfiguration) {
            let d = c.hiddenSize, q = c.heads * c.headDim, kv = c.kvHeads * c.headDim, mlp = c.intermediateSize
            let embedding = c.wordEmbedProjDim ?? d
            projections = [Projection(role: .q, inputs: d, outputs: q), Projection(role: .k, inputs: d, outputs: kv),
                           Projection(role: .v, inputs: d, outputs: kv), Projection(role: .o, inputs: q, outputs: d)]
                + (c.gatedMLP ? [Projection(role: .gate, inputs: d, outputs: mlp)] : [])
                + [Projection(role: .up, inputs: d, outputs: mlp), Projection(role: .down, inputs: mlp, outputs: d)]
            var matrices = [c.vocabSize * embedding]
            if c.learnedPositions { matrices.append((c.maxPositions + c.positionOffset) * d) }
            if embedding != d { matrices += [d * embedding, embedding * d] }  // OPT's project_in and project_out
            if !c.tiedEmbeddings { matrices.append(c.vocabSize * embedding) }
            otherMatrixValues = matrices
            layers = c.layers
            matrixValues = matrices + Array(repeating: projections.map { $0.inputs * $0.outputs }, count: c.layers).flatMap { $0 }
            let biases = (c.attentionBias ? [q, kv, kv] : []) + (c.outputBias ? [d] : [])
                + (c.mlpBias ? Array(repeating: mlp, count: c.gatedMLP ? 2 : 1) + [d] : [])
            let norms = (2 * c.layers + (c.finalNorm ? 1 : 0)) * (c.normKind == .layer ? 2 : 1)
            vectors = Array(repeating: biases, count: c.layers).flatMap { $0 } + Array(repeating: d, count: norms)
            blockVectorValues = biases.reduce(0, +) + 2 * d * (c.normKind == .layer ? 2 : 1)
            let finalNorm = c.finalNorm ? Array(repeating: d, count: c.normKind == .layer ? 2 : 1) : []
            outsideBlocks = [c.vocabSize * embedding] + (c.learnedPositions ? [(c.maxPositions + c.positionOffset) * d] : [])
                + (embedding != d ? [d * embedding] : []) + finalNorm + (embedding != d ? [embedding * d] : [])
                + (c.tiedEmbeddings ? [] : [c.vocabSize * embedding])
            blockMultiplies = projections.reduce(0) { $0 + $1.inputs * $1.outputs }
            headMultiplies = c.vocabSize * embedding
        }

        /// Bytes of every matrix stored as `dtype`, the block projections whose rows are whole blocks
        /// of `projections` (when given) as that type.
        func storedBytes(_ dtype: DType, projections quantized: DType?) -> Int {
            let projectionBytes = projections.reduce(0) { sum, p in
                let type = quantized.map { p.inputs % $0.blockSize == 0 ? $0 : dtype } ?? dtype
                return sum + MemoryPlan.storedBytes(p.inputs * p.outputs, type)
            }
            return otherMatrixValues.reduce(0) { $0 + MemoryPlan.storedBytes($1, dtype) } + layers * projectionBytes
        }
    }

    /// Whether the gradients of the MLP's gate and up outputs are written in 16 bits, as their
    /// GEMMs read them (`Decoder.activationGradients`, `TrainingBackend.gradientOperandType`): on
    /// the GPU, with 16-bit activations, 16-bit or packed weights (and adapters, where adapted),
    /// and no trained MLP bias.
    static func mlpGradientsIn16Bits(_ p: Configuration) -> Bool {
        guard p.device == .cuda, p.activationDType != .f32 else { return false }
        let trainable16 = p.precision.trainableDType != .f32
        switch p.method {
        case .full:
            return trainable16 && !p.model.mlpBias
        case let .lora(lora):
            let roles = (try? ProjectionRole.parse(lora.targets)) ?? []
            let adapted = roles.contains(.up) || p.model.gatedMLP && roles.contains(.gate)
            let packed = p.quantize.map { p.model.hiddenSize % $0.blockSize == 0 } ?? false
            return (packed || p.baseDType != .f32) && (trainable16 || !adapted)
        }
    }

    /// Bytes of `count` values stored as `dtype` (whole blocks for a packed type).
    static func storedBytes(_ count: Int, _ dtype: DType) -> Int {
        (count + dtype.blockSize - 1) / dtype.blockSize * dtype.blockBytes
    }

    /// Scratch bytes at the loss and in backward.
    ///
    /// GPU (`CUDABackend`'s defaults): a 32 MiB cuBLASLt workspace always; at the loss, one chunk
    /// of f32 logits (`ScratchSizing.crossEntropyChunkRows`) and under a 16-bit policy their
    /// gradient rounded to 16 bits; in backward, with f16/bf16 activations and head dimension 64,
    /// 96 or 128 (the tensor-core attention), the widest output gradient rounded to 16 bits (not
    /// the MLP's gate or up when `mlpGradientsIn16Bits`: those are written so) and a
    /// packed weight's decoded tile; otherwise attention's packed q, k, v and output gradient (in 16
    /// bits under a 16-bit policy or with 16-bit activations, else f32), a chunk of one query
    /// block's scores (`AttentionLayout.queryBlockSize`) of at most 256 MiB, the f32 packed
    /// gradients of q, k and v, and one value per query row. CPU: at the loss, a chunk of logits
    /// (`ScratchSizing.cpuCrossEntropyChunkRows` rows; and a packed head's tiles, widened to f32
    /// by each worker); in backward, each worker's block of 64 query rows of
    /// probabilities and their gradient, or a packed weight's widened tiles, with 16-bit activations
    /// widened to f32 beside them.
    static func workspace(_ p: Configuration, rows: Int) -> (loss: Int, backward: Int) {
        let c = p.model, vocabulary = c.vocabSize, width = c.wordEmbedProjDim ?? c.hiddenSize, length = p.sequenceLength
        // A packed or 16-bit base (head included), or only its block projections quantized on load.
        let packedBase = p.method != .full && p.baseDType != .f32
        let packedProjections = packedBase || p.method != .full && p.quantize != nil
        switch p.device {
        case .cuda:
            let blas = 32 << 20, scoreBudget = 256 << 20, chunkBytes = 64 << 20
            let logitRows = ScratchSizing.crossEntropyChunkRows(rows: rows, vocabulary: vocabulary, tileBytes: chunkBytes)
            // f32 logits, and under a 16-bit policy their gradient rounded to a 16-bit head's dtype
            // for the GEMM back (`lowPrecisionMatmul`).
            let roundedGradient = p.precision != .fp32 && (p.method == .full || p.baseDType == .bf16 || p.baseDType == .f16)
            let loss = blas + (roundedGradient ? 6 : 4) * logitRows * vocabulary
            let pairs = p.microBatch * c.heads
            if p.activationDType != .f32 && AttentionLayout.tensorCoreHeadDims.contains(c.headDim) {
                // The tensor-core attention keeps one value per query row (no packed heads, no
                // scores); the backward's largest scratch is then a linear layer's output gradient
                // rounded to 16 bits (the widest projection's), beside a decoded tile of a packed weight.
                let widest = max(mlpGradientsIn16Bits(p) ? 0 : c.intermediateSize, c.heads * c.headDim, c.hiddenSize)
                let tile = packedProjections && (p.quantize != nil || p.baseDType.isQuantized) ? chunkBytes : 0
                return (loss, blas + max(4 * pairs * length, 2 * rows * widest + tile))
            }
            let headValues = pairs * length * c.headDim, packed = p.precision == .fp32 && p.activationDType == .f32 ? 4 : 2
            let pairBytes = AttentionLayout.queryBlockSize(length) * length * (8 + 2 * packed)
            let chunk = max(1, min(pairs, scoreBudget / pairBytes))
            return (loss, blas + 4 * headValues * packed + chunk * pairBytes + 3 * 4 * headValues + 4 * pairs * length)
        case .cpu:
            // The backend's threads: FRUGAL_THREADS, else the active processor count.
            let environment = ProcessInfo.processInfo.environment["FRUGAL_THREADS"].flatMap { Int($0) }
            let workers = max(1, environment ?? ProcessInfo.processInfo.activeProcessorCount)
            // Up to 256 rows of a packed weight per worker, widened to f32.
            let headTileRows = packedBase ? workers * 256 : 0, tileRows = packedProjections ? workers * 256 : 0
            // Pure bf16's trainable weights are widened whole to f32 where a GEMM reads them: the
            // head at the loss, the largest projection in backward (a full fine-tune's; LoRA's
            // adapters are small beside the rest).
            let wholeWeights = p.method == .full && p.precision.trainableDType != .f32
            let widenedHead = wholeWeights ? 4 * vocabulary * width : 0
            let widenedWeight = wholeWeights ? 4 * Shapes(c).projections.map { $0.inputs * $0.outputs }.max()! : 0
            let attention = 4 * min(workers, p.microBatch * c.kvHeads) * 2 * min(length, 64) * length
            // 16-bit activations are widened to f32 where BLAS reads them: attention's q, k, v and
            // output, a projection's input and output.
            let sixteen = p.activationDType != .f32
            let widenedAttention = sixteen ? 4 * rows * 2 * (c.heads + c.kvHeads) * c.headDim : 0
            let widenedProjection = sixteen ? 4 * rows * (c.hiddenSize + c.intermediateSize) : 0
            return (4 * min(rows, ScratchSizing.cpuCrossEntropyChunkRows) * vocabulary + 4 * headTileRows * width + widenedHead,
                    max(attention + widenedAttention,
                        max(4 * tileRows * max(width, c.intermediateSize), widenedWeight) + widenedProjection))
        }
    }

    /// Floating-point operations per trained token (`flopsPerToken`): the `taped` blocks from the
    /// first whose backward runs go forward and back, those below forward only; `downAdapted` is
    /// the down projections' adapters' rank summed over the blocks.
    static func flops(_ p: Configuration, _ shapes: Shapes, adapterValues: Int, full: Bool, taped: Int, downAdapted: Int) -> Double {
        let c = p.model
        let below = Double(c.layers - taped)
        let weights = Double(taped * shapes.blockMultiplies + shapes.headMultiplies)
        // Scores and mixing: 2·2·seq·(heads·headDim) per layer forward, twice that backward.
        let attention = 4 * Double(p.sequenceLength * c.heads * c.headDim)
        var total = (full ? 6 : 4) * weights + 6 * Double(adapterValues) + 3 * Double(taped) * attention
            + below * (2 * Double(shapes.blockMultiplies) + attention)
        if p.checkpointing {
            // Every taped block's forward again, but for a pre-norm block's down projection (`Decoder.recomputeBlock`).
            let skipped = c.normBeforeBlock ? c.hiddenSize * (taped * c.intermediateSize + downAdapted) : 0
            total += 2 * Double(taped * shapes.blockMultiplies + adapterValues - skipped) + Double(taped) * attention
        }
        return total
    }
}
