// CUDAAttentionGEMM: attention through cuBLASLt's strided-batch GEMMs on the tensor cores, for
// training-sized activations: heads are packed contiguous (f16 and bf16 activations in their
// dtype; f32 ones as bf16 with `lowPrecisionMatmul`, else f32), and the (queries × keys) scores of
// a chunk of (sequence, head) pairs at a time — never of all of them — go through the masked
// softmax of Kernels/attention_gemm.cu. The queries go a block at a time, each block's scores
// only against the keys it can see, so the GEMMs skip most of the causal mask's upper triangle.
// Scores, outputs and gradients leave the GEMMs as f32; with
// 16-bit operands the probabilities, their gradients and dOut are rounded to the operands' dtype.
// The score chunk is bounded by `Options.attentionWorkspaceBytes`; decoding (under 8 queries)
// keeps the FlashAttention-style kernels of CUDAAttention.swift.
import Foundation
import FrugalCore

extension CUDABackend {
    /// Whether `attention` of this layout goes through GEMMs.
    func attentionUsesGEMMs(_ l: AttentionLayout, _ q: Tensor) -> Bool {
        l.queryLength >= 8
    }

    /// Heads of q, k (repeated per query head of a group) and v, packed (pairs, length, d).
    struct PackedHeads {
        let q, k, v: Tensor
        let type: DType
        var pairs: Int
    }

    func packHeads(q: Tensor, k: Tensor, v: Tensor, layout l: AttentionLayout) throws -> PackedHeads {
        let type: DType = q.dtype != .f32 ? q.dtype : options.lowPrecisionMatmul ? .bf16 : .f32
        let pairs = l.batch * l.heads, group = l.heads / l.kvHeads
        func pack(_ source: Tensor, length: Int, group: Int) throws -> Tensor {
            let packed = try allocate([pairs * length * l.headDim], type, .workspace)
            try launch(CUDAKernels.attentionPack(source.dtype, to: type), elements: packed.count,
                       [packed.address, source.address, i32(l.batch), i32(length), i32(l.heads), i32(group), i32(l.headDim)])
            return packed
        }
        return PackedHeads(q: try pack(q, length: l.queryLength, group: 1), k: try pack(k, length: l.keyLength, group: group),
                           v: try pack(v, length: l.keyLength, group: group), type: type, pairs: pairs)
    }

    /// (pairs, length, d) f32 back to (batch·length, heads/group·d) in the destination's dtype,
    /// summing each group (=).
    func unpackHeads(_ destination: Tensor, _ packed: Tensor, length: Int, group: Int, layout l: AttentionLayout) throws {
        try launch(CUDAKernels.attentionUnpack(destination.dtype), elements: l.batch * length * (l.heads / group) * l.headDim,
                   [destination.address, packed.address, i32(l.batch), i32(length), i32(l.heads), i32(group), i32(l.headDim)])
    }

    /// Pairs per chunk: as many as fit `bytesPerPair` into the attention workspace.
    func attentionChunk(_ l: AttentionLayout, bytesPerPair: Int) -> Int {
        max(1, min(l.batch * l.heads, options.attentionWorkspaceBytes / max(bytesPerPair, 1)))
    }

    /// A block of queries: the first, how many, and the keys they see (the causal mask's prefix).
    struct QueryBlock {
        let first, count, keys: Int
    }

    /// The layout's query blocks (`AttentionLayout.queryBlockSize`), the last first: each block's
    /// GEMMs skip the keys no query of it sees, about half the masked scores in all.
    func queryBlocks(_ l: AttentionLayout) -> [QueryBlock] {
        let size = AttentionLayout.queryBlockSize(l.queryLength)
        return stride(from: 0, to: l.queryLength, by: size).reversed().map { first in
            let count = min(size, l.queryLength - first)
            return QueryBlock(first: first, count: count, keys: min(l.keyLength, l.queryOffset + first + count))
        }
    }

    /// The shapes of one chunk's batched GEMMs for one query block (column-major views of
    /// row-major matrices): the block's queries, outputs and their gradients sit at row
    /// `block.first` of each pair's (lq, d) matrices, its scores are (count, keys) per pair.
    private func attentionGEMMs(_ l: AttentionLayout, _ type: DType, pairs n: Int, block: QueryBlock) -> AttentionGEMMs {
        let lq = l.queryLength, lk = l.keyLength, d = l.headDim, b = block.count, keys = block.keys
        // 16-bit operands run on the tensor cores with f32 accumulation; f32 ones as f32 GEMMs do.
        let t = Self.blasType(type), computeType = compute(type)
        func shape(_ m: Int, _ n: Int, _ k: Int, _ ta: Bool, _ tb: Bool, _ lda: Int, _ ldb: Int, _ ldd: Int) -> CuBLASLt.Shape {
            CuBLASLt.Shape(m: m, n: n, k: k, transposeA: ta, transposeB: tb, lda: lda, ldb: ldb, ldd: ldd, typeA: t, typeB: t,
                           compute: computeType)
        }
        return AttentionGEMMs(
            // Sᵀ (keys × b) = K·Qᵀ: A = K (d × keys, transposed), B = Q (d × b).
            scores: shape(keys, b, d, true, false, d, d, keys).batched(n, strideA: lk * d, strideB: lq * d, strideD: b * keys),
            // Oᵀ (d × b) = Vᵀ·Pᵀ: A = V (d × keys), B = P (keys × b).
            output: shape(d, b, keys, false, false, d, keys, d).batched(n, strideA: lk * d, strideB: b * keys, strideD: lq * d),
            // dPᵀ (keys × b) = V·dOᵀ: A = V (d × keys, transposed), B = dO (d × b).
            dProbabilities: shape(keys, b, d, true, false, d, d, keys).batched(n, strideA: lk * d, strideB: lq * d, strideD: b * keys),
            // dVᵀ (d × keys) += dOᵀ·P: A = dO (d × b), B = P (keys × b, transposed).
            dValues: shape(d, keys, b, false, true, d, keys, d).batched(n, strideA: lq * d, strideB: b * keys, strideD: lk * d),
            // dQᵀ (d × b) = Kᵀ·dSᵀ: A = K (d × keys), B = dS (keys × b).
            dQueries: shape(d, b, keys, false, false, d, keys, d).batched(n, strideA: lk * d, strideB: b * keys, strideD: lq * d),
            // dKᵀ (d × keys) += Qᵀ·dS: A = Q (d × b), B = dS (keys × b, transposed).
            dKeys: shape(d, keys, b, false, true, d, keys, d).batched(n, strideA: lq * d, strideB: b * keys, strideD: lk * d))
    }

    struct AttentionGEMMs {
        let scores, output, dProbabilities, dValues, dQueries, dKeys: CuBLASLt.Shape
    }

    /// The forward through GEMMs: `out` (=, (batch·lq, heads·d) in the activation dtype) and the
    /// log-sum-exp (=, (batch·heads, lq) f32), a chunk of pairs and a query block at a time.
    func attentionGEMMForward(out: Tensor, lse: DevicePointer, heads p: PackedHeads, segments: DevicePointer,
                              layout l: AttentionLayout) throws {
        let lq = l.queryLength, lk = l.keyLength, d = l.headDim, size = p.type.blockBytes
        let blockRows = AttentionLayout.queryBlockSize(lq)
        let chunk = attentionChunk(l, bytesPerPair: blockRows * lk * (4 + size))
        let scores = try allocate([chunk * blockRows * lk], .f32, .workspace)
        let probabilities = try allocate([chunk * blockRows * lk], p.type, .workspace)
        let output = try allocate([p.pairs * lq * d], .f32, .workspace)
        for first in stride(from: 0, to: p.pairs, by: chunk) {
            let n = min(chunk, p.pairs - first)
            let k = p.k.address + UInt64(first * lk * d * size), v = p.v.address + UInt64(first * lk * d * size)
            for block in queryBlocks(l) {
                let g = attentionGEMMs(l, p.type, pairs: n, block: block), row = first * lq + block.first
                try gemm(g.scores, a: k, b: p.q.address + UInt64(row * d * size), d: scores.address, alpha: l.scale, beta: 0)
                try launch(CUDAKernels.attentionSoftmax(p.type), grid: ((n * block.count + 7) / 8, 1, 1), block: (256, 1, 1),
                           [probabilities.address, lse + UInt64(block.first * 4), scores.address, segments, i32(n), i32(first),
                            i32(l.heads), i32(block.count), i32(block.keys), i32(l.queryOffset + block.first), i32(lq), i32(lk)])
                try gemm(g.output, a: v, b: probabilities.address, d: output.address + UInt64(row * d * 4), beta: 0)
            }
        }
        try unpackHeads(out, output, length: lq, group: 1, layout: l)
    }

    /// The backward through GEMMs: dq, dk, dv (=) from the recomputed scores, the forward's
    /// log-sum-exp and D = Σ dOut·out per row (`delta`), a chunk of pairs and a query block at a
    /// time, the last block first: it sees every key it can, so its dk and dv overwrite and the
    /// earlier blocks' add.
    func attentionGEMMBackward(dq: Tensor, dk: Tensor, dv: Tensor, dOut: Tensor, heads p: PackedHeads, lse: DevicePointer,
                               delta: DevicePointer, segments: DevicePointer, layout l: AttentionLayout) throws {
        let lq = l.queryLength, lk = l.keyLength, d = l.headDim, size = p.type.blockBytes, group = l.heads / l.kvHeads
        let packedOut = try allocate([p.pairs * lq * d], p.type, .workspace)
        try launch(CUDAKernels.attentionPack(.f32, to: p.type), elements: packedOut.count,
                   [packedOut.address, dOut.address, i32(l.batch), i32(lq), i32(l.heads), i32(1), i32(d)])
        let blockRows = AttentionLayout.queryBlockSize(lq), blocks = queryBlocks(l)
        let chunk = attentionChunk(l, bytesPerPair: blockRows * lk * (8 + 2 * size))
        let scores = try allocate([chunk * blockRows * lk], .f32, .workspace)
        let dProbabilities = try allocate([chunk * blockRows * lk], .f32, .workspace)
        let probabilities = try allocate([chunk * blockRows * lk], p.type, .workspace)
        let dScores = try allocate([chunk * blockRows * lk], p.type, .workspace)
        let dQueries = try allocate([p.pairs * lq * d], .f32, .workspace)
        let dKeys = try allocate([p.pairs * lk * d], .f32, .workspace), dValues = try allocate([p.pairs * lk * d], .f32, .workspace)
        // Keys no query sees (past the last query's position) get no gradient from the blocks.
        if blocks[0].keys < lk {
            try driver.memsetAsync(dKeys.address, 0, bytes: dKeys.byteCount, stream: stream)
            try driver.memsetAsync(dValues.address, 0, bytes: dValues.byteCount, stream: stream)
        }
        for first in stride(from: 0, to: p.pairs, by: chunk) {
            let n = min(chunk, p.pairs - first)
            let k = p.k.address + UInt64(first * lk * d * size), v = p.v.address + UInt64(first * lk * d * size)
            let dk = dKeys.address + UInt64(first * lk * d * 4), dv = dValues.address + UInt64(first * lk * d * 4)
            for (index, block) in blocks.enumerated() {
                let g = attentionGEMMs(l, p.type, pairs: n, block: block), row = first * lq + block.first
                let q = p.q.address + UInt64(row * d * size), o = packedOut.address + UInt64(row * d * size)
                let beta: Float = index == 0 && block.keys == lk ? 0 : 1
                try gemm(g.scores, a: k, b: q, d: scores.address, alpha: l.scale, beta: 0)
                try gemm(g.dProbabilities, a: v, b: o, d: dProbabilities.address, beta: 0)
                try launch(CUDAKernels.attentionSoftmaxBackward(p.type), elements: n * block.count * block.keys,
                           [probabilities.address, dScores.address, scores.address, dProbabilities.address,
                            lse + UInt64(block.first * 4), delta + UInt64(block.first * 4), segments, i32(n), i32(first),
                            i32(l.heads), i32(block.count), i32(block.keys), i32(l.queryOffset + block.first), i32(lq), i32(lk)])
                try gemm(g.dValues, a: o, b: probabilities.address, d: dv, beta: beta)
                try gemm(g.dQueries, a: k, b: dScores.address, d: dQueries.address + UInt64(row * d * 4), alpha: l.scale, beta: 0)
                try gemm(g.dKeys, a: q, b: dScores.address, d: dk, alpha: l.scale, beta: beta)
            }
        }
        try unpackHeads(dq, dQueries, length: lq, group: 1, layout: l)
        try unpackHeads(dk, dKeys, length: lk, group: group, layout: l)
        try unpackHeads(dv, dValues, length: lk, group: group, layout: l)
    }
}
