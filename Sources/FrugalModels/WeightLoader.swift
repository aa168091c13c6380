// WeightLoader: copies a source's stored tensors onto a backend as a decoder's weights.
import FrugalCore
import FrugalFormats

/// Builds `DecoderWeights` from a `WeightSource`, splitting fused projections, transposing
/// GPT-2's `Conv1D` weights, restoring HF rotary order for GGUF q/k rows, and quantizing the
/// block projections when asked.
struct WeightLoader {
    let source: WeightSource
    let naming: TensorNaming
    let configuration: ModelConfiguration
    let backend: Backend
    /// Load every weight as f32 `trainable` memory (a full fine-tune) instead of frozen `weights` as stored.
    var trainable = false
    /// The dtype trainable weights are stored in: f32, or bf16 under pure bf16 (each tensor widened,
    /// then rounded to nearest even, one at a time).
    var trainableDType: DType = .f32
    /// Re-encode every block projection whose rows are whole blocks as this packed type
    /// (`BaseQuantization`); nil keeps them as stored.
    var quantize: DType?

    func load() throws -> DecoderWeights {
        let c = configuration
        let embedding = try upload(naming.tokenEmbedding + ".weight")
        var head = embedding
        if !c.tiedEmbeddings, let name = naming.head, let stored = try source.tensor(name + ".weight") {
            head = try upload(stored, name: name + ".weight")
        }
        var blocks = [BlockWeights]()
        for i in 0..<c.layers { blocks.append(try block(i)) }
        return DecoderWeights(
            tokenEmbedding: embedding,
            positionEmbedding: try naming.positionEmbedding.map { try upload($0 + ".weight") },
            projectIn: try optionalLinear(naming.projectIn), projectOut: try optionalLinear(naming.projectOut),
            blocks: blocks, finalNorm: c.finalNorm ? try norm(naming.finalNorm!) : nil, head: head)
    }

    private func block(_ i: Int) throws -> BlockWeights {
        let c = configuration, q = c.heads * c.headDim, kv = c.kvHeads * c.headDim
        var query: Linear, key: Linear, value: Linear
        if let fused = naming.fusedQKV {
            let parts = try split(fused(i), rows: [q, kv, kv])
            (query, key, value) = (parts[0], parts[1], parts[2])
        } else {
            query = try linear(naming.query(i), rotaryHeads: c.heads, projection: true)
            key = try linear(naming.key(i), rotaryHeads: c.kvHeads, projection: true)
            value = try linear(naming.value(i), projection: true)
        }
        var gate: Linear?, up: Linear
        if let fused = naming.fusedGateUp {
            let parts = try split(fused(i), rows: [c.intermediateSize, c.intermediateSize])
            (gate, up) = (parts[0], parts[1])
        } else {
            gate = try naming.gate.map { try linear($0(i), projection: true) }
            up = try linear(naming.up(i), projection: true)
        }
        return BlockWeights(attentionNorm: try norm(naming.attentionNorm(i)), query: query, key: key, value: value,
                            output: try linear(naming.output(i), projection: true), mlpNorm: try norm(naming.mlpNorm(i)),
                            gate: gate, up: up, down: try linear(naming.down(i), projection: true))
    }

    // MARK: - Pieces

    private func norm(_ name: String) throws -> Norm {
        Norm(weight: try upload(name + ".weight"), bias: try source.tensor(name + ".bias").map { try upload($0, name: name + ".bias") })
    }

    /// The projection `name`; a block's (`projection`) is re-encoded as `quantize` when set.
    private func linear(_ name: String, rotaryHeads: Int? = nil, projection: Bool = false) throws -> Linear {
        let weightName = name + ".weight", biasName = name + ".bias"
        var weight = try checkedSize(try source.require(weightName), name: weightName)
        let bias = try source.tensor(biasName)
        var weightBytes: [UInt8]?, biasBytes: [UInt8]?
        if naming.transposedLinears {
            weightBytes = try transposed(weight, name: weightName)
            weight.shape = Shape([weight.shape[1], weight.shape[0]])
        }
        if naming.interleavedRotary, let heads = rotaryHeads {
            weightBytes = unpermutedRows(weightBytes ?? Array(weight.bytes), rows: weight.shape.rows, heads: heads)
            biasBytes = bias.map { unpermutedRows(Array($0.bytes), rows: $0.shape.count, heads: heads) }
        }
        if projection, let dtype = quantize, weight.shape.rank == 2 {
            // The bytes as rewritten above, or as stored.
            let encoded: [UInt8]?
            if let rewritten = weightBytes {
                encoded = try rewritten.withUnsafeBytes {
                    try BaseQuantization.encode(StoredTensor(dtype: weight.dtype, shape: weight.shape, bytes: $0), as: dtype,
                                                name: weightName)
                }
            } else {
                encoded = try BaseQuantization.encode(weight, as: dtype, name: weightName)
            }
            if let encoded { (weightBytes, weight.dtype) = (encoded, dtype) }
        }
        return Linear(weight: try upload(weight, replacing: weightBytes, name: weightName),
                      bias: try bias.map { try upload($0, replacing: biasBytes, name: biasName) })
    }

    /// Uploads `stored`, or `bytes` in its place when the loader rewrote them.
    private func upload(_ stored: StoredTensor, replacing bytes: [UInt8]?, name: String) throws -> Tensor {
        guard let bytes else { return try upload(stored, name: name) }
        return try bytes.withUnsafeBytes {
            try upload(StoredTensor(dtype: stored.dtype, shape: stored.shape, bytes: $0), name: name)
        }
    }

    private func optionalLinear(_ name: String?) throws -> Linear? {
        guard let name, try source.tensor(name + ".weight") != nil else { return nil }
        return try linear(name)
    }

    /// A fused projection cut by rows into views: one `Linear` per entry of `rows`.
    private func split(_ name: String, rows: [Int]) throws -> [Linear] {
        let whole = try linear(name, projection: true)
        guard whole.outputs == rows.reduce(0, +) else {
            throw FrugalError.shapeMismatch(name: name + ".weight", expected: [rows.reduce(0, +), whole.inputs],
                                            found: whole.weight.shape)
        }
        var start = 0
        return rows.map { count in
            defer { start += count }
            let weight = whole.weight.rows(start..<(start + count))
            let bias = whole.bias.map { $0.reshaped([$0.count, 1]).rows(start..<(start + count)).reshaped([count]) }
            return Linear(weight: weight, bias: bias)
        }
    }

    private func upload(_ name: String) throws -> Tensor {
        try upload(source.require(name), name: name)
    }

    /// `stored`, checked to hold the bytes its shape and dtype need.
    private func checkedSize(_ stored: StoredTensor, name: String) throws -> StoredTensor {
        guard let bytes = stored.dtype.byteCount(elements: stored.shape.count), bytes == stored.bytes.count else {
            throw FrugalError.malformedFile(path: source.path, problem: "tensor '\(name)' holds \(stored.bytes.count) bytes, not \(stored.shape) of \(stored.dtype.rawValue)")
        }
        return stored
    }

    private func upload(_ stored: StoredTensor, name: String) throws -> Tensor {
        _ = try checkedSize(stored, name: name)
        guard trainable else { return backend.upload(stored.bytes, stored.shape, stored.dtype, .weights) }
        let widened = [Float](unsafeUninitializedCapacity: stored.shape.count) { buffer, count in
            BlockQuantization.dequantize(stored.dtype, stored.bytes.baseAddress!, buffer.baseAddress!, count: stored.shape.count)
            count = stored.shape.count
        }
        if trainableDType == .bf16 {
            let rounded = widened.map(HalfPrecision.floatToBF16)
            return rounded.withUnsafeBytes { backend.upload($0, stored.shape, .bf16, .trainable) }
        }
        return widened.withUnsafeBytes { backend.upload($0, stored.shape, .f32, .trainable) }
    }

    /// A 2-D float tensor's bytes with rows and columns swapped.
    private func transposed(_ stored: StoredTensor, name: String) throws -> [UInt8] {
        guard stored.shape.rank == 2, !stored.dtype.isQuantized else {
            throw FrugalError.malformedFile(path: source.path, problem: "tensor '\(name)' cannot be transposed (\(stored.shape) \(stored.dtype.rawValue))")
        }
        let rows = stored.shape[0], columns = stored.shape[1], size = stored.dtype.blockBytes
        var out = [UInt8](repeating: 0, count: stored.bytes.count)
        out.withUnsafeMutableBytes { dst in
            for r in 0..<rows {
                for c in 0..<columns {
                    let from = (r * columns + c) * size, to = (c * rows + r) * size
                    for b in 0..<size { dst[to + b] = stored.bytes[from + b] }
                }
            }
        }
        return out
    }

    /// Undoes llama.cpp's rotary permutation of q/k rows: within each head, GGUF row `2i + j`
    /// holds HF row `j·(d/2) + i`.
    private func unpermutedRows(_ bytes: [UInt8], rows: Int, heads: Int) -> [UInt8] {
        let rowBytes = bytes.count / rows, d = rows / heads
        var out = [UInt8](repeating: 0, count: bytes.count)
        for h in 0..<heads {
            for i in 0..<(d / 2) {
                for j in 0..<2 {
                    let from = (h * d + 2 * i + j) * rowBytes, to = (h * d + j * (d / 2) + i) * rowBytes
                    out.replaceSubrange(to..<(to + rowBytes), with: bytes[from..<(from + rowBytes)])
                }
            }
        }
        return out
    }
}
