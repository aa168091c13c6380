// CUDAAttentionGEMM: attention through cuBLASLt's strided-batch GEMMs on the tensor cores, for
// training-sized f32 activations: heads are packed contiguous (bf16 with `lowPrecisionMatmul`,
// else f32), and the (queries × keys) scores of a chunk of (sequence, head) pairs at a time —
// never of all of them — go through the masked softmax of Kernels/attention_gemm.cu. The score
// chunk is bounded by `Options.attentionWorkspaceBytes`; decoding (under 8 queries) and 16-bit
// activations keep the FlashAttention-style kernels of CUDAAttention.swift.
import Foundation
import FrugalCore

extension CUDABackend {
    /// Whether `attention` of this layout goes through GEMMs.
    func attentionUsesGEMMs(_ l: AttentionLayout, _ q: Tensor) -> Bool {
        q.dtype == .f32 && l.queryLength >= 8
    }

    /// Heads of q, k (repeated per query head of a group) and v, packed (pairs, length, d).
    struct PackedHeads {
        let q, k, v: Tensor
        let type: DType
        var pairs: Int
    }

    func packHeads(q: Tensor, k: Tensor, v: Tensor, layout l: AttentionLayout) throws -> PackedHeads {
        let type: DType = options.lowPrecisionMatmul ? .bf16 : .f32
        let pairs = l.batch * l.heads, group = l.heads / l.kvHeads
        func pack(_ source: Tensor, length: Int, group: Int) throws -> Tensor {
            let packed = try allocate([pairs * length * l.headDim], type, .workspace)
            try launch(CUDAKernels.attentionPack(type), elements: packed.count,
                       [packed.address, source.address, i32(l.batch), i32(length), i32(l.heads), i32(group), i32(l.headDim)])
            return packed
        }
        return PackedHeads(q: try pack(q, length: l.queryLength, group: 1), k: try pack(k, length: l.keyLength, group: group),
                           v: try pack(v, length: l.keyLength, group: group), type: type, pairs: pairs)
    }

    /// (pairs, length, d) f32 back to (batch·length, heads/group·d), summing each group (=).
    func unpackHeads(_ destination: DevicePointer, _ packed: Tensor, length: Int, group: Int, layout l: AttentionLayout) throws {
        try launch(CUDAKernels.attentionUnpack, elements: l.batch * length * (l.heads / group) * l.headDim,
                   [destination, packed.address, i32(l.batch), i32(length), i32(l.heads), i32(group), i32(l.headDim)])
    }

    /// Pairs per chunk: as many as fit `bytesPerPair` into the attention workspace.
    func attentionChunk(_ l: AttentionLayout, bytesPerPair: Int) -> Int {
        max(1, min(l.batch * l.heads, options.attentionWorkspaceBytes / max(bytesPerPair, 1)))
    }

    /// Query rows per causal block: each block's GEMMs stop at the last key its last row sees,
    /// so about (blocks + 1) / (2·blocks) of the full score matrix is computed. Four blocks of at
    /// least 64 rows (fewer, larger GEMMs keep the launches few).
    static func queryBlock(_ l: AttentionLayout) -> Int { max(64, ((l.queryLength + 3) / 4 + 63) / 64 * 64) }

    /// One causal block of query rows and the keys it sees.
    struct QueryBlock {
        let first: Int, rows: Int, keys: Int
    }

    static func queryBlocks(_ l: AttentionLayout) -> [QueryBlock] {
        let size = queryBlock(l)
        return stride(from: 0, to: l.queryLength, by: size).map { first in
            let rows = min(size, l.queryLength - first)
            return QueryBlock(first: first, rows: rows, keys: min(l.keyLength, l.queryOffset + first + rows))
        }
    }

    /// A strided batch of `n` column-major GEMMs over the pairs of a chunk (operands `type`,
    /// f32 output): bf16 runs on the tensor cores with f32 accumulation, f32 as f32 GEMMs do.
    private func pairGEMM(_ type: DType, pairs n: Int, m: Int, n columns: Int, k: Int, transposeA: Bool, transposeB: Bool,
                          lda: Int, ldb: Int, ldd: Int, strideA: Int, strideB: Int, strideD: Int) -> CuBLASLt.Shape {
        let t = Self.blasType(type)
        return CuBLASLt.Shape(m: m, n: columns, k: k, transposeA: transposeA, transposeB: transposeB, lda: lda, ldb: ldb, ldd: ldd,
                              typeA: t, typeB: t, compute: type == .f32 ? f32Compute : .f32)
            .batched(n, strideA: strideA, strideB: strideB, strideD: strideD)
    }

    /// The forward through GEMMs: `out` (=, (batch·lq, heads·d) f32) and the log-sum-exp (=,
    /// (batch·heads, lq)). Per chunk of pairs and causal block b of query rows (keys ≤ kb):
    /// Sᵀ[:, b] = K[:kb]·Q[b]ᵀ, the masked softmax of every row, Oᵀ[b] = V[:kb]ᵀ·P[b, :kb]ᵀ.
    func attentionGEMMForward(out: DevicePointer, lse: DevicePointer, heads p: PackedHeads, segments: DevicePointer,
                              layout l: AttentionLayout) throws {
        let lq = l.queryLength, lk = l.keyLength, d = l.headDim, size = p.type.blockBytes, blocks = Self.queryBlocks(l)
        let chunk = attentionChunk(l, bytesPerPair: lq * lk * (4 + size))
        let scores = try allocate([chunk * lq * lk], .f32, .workspace), probabilities = try allocate([chunk * lq * lk], p.type, .workspace)
        let output = try allocate([p.pairs * lq * d], .f32, .workspace)
        for first in stride(from: 0, to: p.pairs, by: chunk) {
            let n = min(chunk, p.pairs - first)
            let q = p.q.address + UInt64(first * lq * d * size), k = p.k.address + UInt64(first * lk * d * size)
            let v = p.v.address + UInt64(first * lk * d * size)
            for b in blocks {
                try gemm(pairGEMM(p.type, pairs: n, m: b.keys, n: b.rows, k: d, transposeA: true, transposeB: false, lda: d, ldb: d,
                                  ldd: lk, strideA: lk * d, strideB: lq * d, strideD: lq * lk),
                         a: k, b: q + UInt64(b.first * d * size), d: scores.address + UInt64(b.first * lk * 4), alpha: l.scale, beta: 0)
            }
            try launch(CUDAKernels.attentionSoftmax(p.type), grid: ((n * lq + 7) / 8, 1, 1), block: (256, 1, 1),
                       [probabilities.address, lse, scores.address, segments, i32(n), i32(first), i32(l.heads), i32(lq), i32(lk),
                        i32(l.queryOffset), i32(Self.queryBlock(l))])
            for b in blocks {
                try gemm(pairGEMM(p.type, pairs: n, m: d, n: b.rows, k: b.keys, transposeA: false, transposeB: false, lda: d, ldb: lk,
                                  ldd: d, strideA: lk * d, strideB: lq * lk, strideD: lq * d),
                         a: v, b: probabilities.address + UInt64(b.first * lk * size),
                         d: output.address + UInt64((first * lq + b.first) * d * 4), beta: 0)
            }
        }
        try unpackHeads(out, output, length: lq, group: 1, layout: l)
    }

    /// The backward through GEMMs: dq, dk, dv (=) from the recomputed scores, the forward's
    /// log-sum-exp and D = Σ dOut·out per row (`delta`). Per chunk and causal block as the
    /// forward: S and dPᵀ[:, b] = V[:kb]·dO[b]ᵀ, then P and dS, then dQᵀ[b] = K[:kb]ᵀ·dS[b]ᵀ, and
    /// dVᵀ[:, :kb] += dO[b]ᵀ·P[b] and dKᵀ[:, :kb] += Q[b]ᵀ·dS[b] over the blocks from the last (the
    /// widest, which writes) to the first.
    func attentionGEMMBackward(dq: Tensor, dk: Tensor, dv: Tensor, dOut: Tensor, heads p: PackedHeads, lse: DevicePointer,
                               delta: DevicePointer, segments: DevicePointer, layout l: AttentionLayout) throws {
        let lq = l.queryLength, lk = l.keyLength, d = l.headDim, size = p.type.blockBytes, group = l.heads / l.kvHeads
        let blocks = Self.queryBlocks(l), blockSize = Self.queryBlock(l)
        let packedOut = try allocate([p.pairs * lq * d], p.type, .workspace)
        try launch(CUDAKernels.attentionPack(p.type), elements: packedOut.count,
                   [packedOut.address, dOut.address, i32(l.batch), i32(lq), i32(l.heads), i32(1), i32(d)])
        let chunk = attentionChunk(l, bytesPerPair: lq * lk * (8 + 2 * size))
        let scores = try allocate([chunk * lq * lk], .f32, .workspace), dProbabilities = try allocate([chunk * lq * lk], .f32, .workspace)
        let probabilities = try allocate([chunk * lq * lk], p.type, .workspace), dScores = try allocate([chunk * lq * lk], p.type, .workspace)
        let dQueries = try allocate([p.pairs * lq * d], .f32, .workspace)
        let dKeys = try allocate([p.pairs * lk * d], .f32, .workspace), dValues = try allocate([p.pairs * lk * d], .f32, .workspace)
        // Keys no query sees get no gradient from the blocks: zero them first.
        let widest = blocks.map(\.keys).max() ?? 0
        if widest < lk {
            try driver.memsetAsync(dKeys.address, 0, bytes: dKeys.byteCount, stream: stream)
            try driver.memsetAsync(dValues.address, 0, bytes: dValues.byteCount, stream: stream)
        }
        for first in stride(from: 0, to: p.pairs, by: chunk) {
            let n = min(chunk, p.pairs - first)
            let q = p.q.address + UInt64(first * lq * d * size), k = p.k.address + UInt64(first * lk * d * size)
            let v = p.v.address + UInt64(first * lk * d * size), o = packedOut.address + UInt64(first * lq * d * size)
            let dKeysChunk = dKeys.address + UInt64(first * lk * d * 4), dValuesChunk = dValues.address + UInt64(first * lk * d * 4)
            for b in blocks {
                let scoreShape = pairGEMM(p.type, pairs: n, m: b.keys, n: b.rows, k: d, transposeA: true, transposeB: false, lda: d,
                                          ldb: d, ldd: lk, strideA: lk * d, strideB: lq * d, strideD: lq * lk)
                try gemm(scoreShape, a: k, b: q + UInt64(b.first * d * size), d: scores.address + UInt64(b.first * lk * 4),
                         alpha: l.scale, beta: 0)
                try gemm(scoreShape, a: v, b: o + UInt64(b.first * d * size), d: dProbabilities.address + UInt64(b.first * lk * 4),
                         beta: 0)
            }
            try launch(CUDAKernels.attentionSoftmaxBackward(p.type), elements: n * lq * lk,
                       [probabilities.address, dScores.address, scores.address, dProbabilities.address, lse, delta, segments,
                        i32(n), i32(first), i32(l.heads), i32(lq), i32(lk), i32(l.queryOffset), i32(blockSize)])
            for b in blocks {
                try gemm(pairGEMM(p.type, pairs: n, m: d, n: b.rows, k: b.keys, transposeA: false, transposeB: false, lda: d, ldb: lk,
                                  ldd: d, strideA: lk * d, strideB: lq * lk, strideD: lq * d),
                         a: k, b: dScores.address + UInt64(b.first * lk * size),
                         d: dQueries.address + UInt64((first * lq + b.first) * d * 4), alpha: l.scale, beta: 0)
            }
            for (index, b) in blocks.sorted(by: { $0.keys > $1.keys }).enumerated() {
                let beta: Float = index == 0 && widest == lk ? 0 : 1
                let shape = pairGEMM(p.type, pairs: n, m: d, n: b.keys, k: b.rows, transposeA: false, transposeB: true, lda: d, ldb: lk,
                                     ldd: d, strideA: lq * d, strideB: lq * lk, strideD: lk * d)
                try gemm(shape, a: o + UInt64(b.first * d * size), b: probabilities.address + UInt64(b.first * lk * size),
                         d: dValuesChunk, beta: beta)
                try gemm(shape, a: q + UInt64(b.first * d * size), b: dScores.address + UInt64(b.first * lk * size),
                         d: dKeysChunk, alpha: l.scale, beta: beta)
            }
        }
        try unpackHeads(dq.address, dQueries, length: lq, group: 1, layout: l)
        try unpackHeads(dk.address, dKeys, length: lk, group: group, layout: l)
        try unpackHeads(dv.address, dValues, length: lk, group: group, layout: l)
    }
}
