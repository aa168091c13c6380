// CUDAAttentionGEMM: attention through cuBLASLt's strided-batch GEMMs on the tensor cores, for
// training-sized activations: heads are packed contiguous (f16 and bf16 activations in their
// dtype; f32 ones as bf16 with `lowPrecisionMatmul`, else f32), and the (queries × keys) scores of
// a chunk of (sequence, head) pairs at a time — never of all of them — go through the masked
// softmax of Kernels/attention_gemm.cu. Scores, outputs and gradients leave the GEMMs as f32; with
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

    /// The shapes of one chunk's batched GEMMs (column-major views of row-major matrices).
    private func attentionGEMMs(_ l: AttentionLayout, _ type: DType, pairs n: Int) -> AttentionGEMMs {
        let lq = l.queryLength, lk = l.keyLength, d = l.headDim
        // 16-bit operands run on the tensor cores with f32 accumulation; f32 ones as f32 GEMMs do.
        let t = Self.blasType(type), computeType = compute(type)
        func shape(_ m: Int, _ n: Int, _ k: Int, _ ta: Bool, _ tb: Bool, _ lda: Int, _ ldb: Int, _ ldd: Int) -> CuBLASLt.Shape {
            CuBLASLt.Shape(m: m, n: n, k: k, transposeA: ta, transposeB: tb, lda: lda, ldb: ldb, ldd: ldd, typeA: t, typeB: t,
                           compute: computeType)
        }
        return AttentionGEMMs(
            // Sᵀ (lk × lq) = K·Qᵀ: A = K (d × lk, transposed), B = Q (d × lq).
            scores: shape(lk, lq, d, true, false, d, d, lk).batched(n, strideA: lk * d, strideB: lq * d, strideD: lq * lk),
            // Oᵀ (d × lq) = Vᵀ·Pᵀ: A = V (d × lk), B = P (lk × lq).
            output: shape(d, lq, lk, false, false, d, lk, d).batched(n, strideA: lk * d, strideB: lq * lk, strideD: lq * d),
            // dPᵀ (lk × lq) = V·dOᵀ: A = V (d × lk, transposed), B = dO (d × lq).
            dProbabilities: shape(lk, lq, d, true, false, d, d, lk).batched(n, strideA: lk * d, strideB: lq * d, strideD: lq * lk),
            // dVᵀ (d × lk) = dOᵀ·P: A = dO (d × lq), B = P (lk × lq, transposed).
            dValues: shape(d, lk, lq, false, true, d, lk, d).batched(n, strideA: lq * d, strideB: lq * lk, strideD: lk * d),
            // dQᵀ (d × lq) = Kᵀ·dSᵀ: A = K (d × lk), B = dS (lk × lq).
            dQueries: shape(d, lq, lk, false, false, d, lk, d).batched(n, strideA: lk * d, strideB: lq * lk, strideD: lq * d),
            // dKᵀ (d × lk) = Qᵀ·dS: A = Q (d × lq), B = dS (lk × lq, transposed).
            dKeys: shape(d, lk, lq, false, true, d, lk, d).batched(n, strideA: lq * d, strideB: lq * lk, strideD: lk * d))
    }

    struct AttentionGEMMs {
        let scores, output, dProbabilities, dValues, dQueries, dKeys: CuBLASLt.Shape
    }

    /// The forward through GEMMs: `out` (=, (batch·lq, heads·d) in the activation dtype) and the
    /// log-sum-exp (=, (batch·heads, lq) f32).
    func attentionGEMMForward(out: Tensor, lse: DevicePointer, heads p: PackedHeads, segments: DevicePointer,
                              layout l: AttentionLayout) throws {
        let lq = l.queryLength, lk = l.keyLength, d = l.headDim, size = p.type.blockBytes
        let chunk = attentionChunk(l, bytesPerPair: lq * lk * (4 + size))
        let scores = try allocate([chunk * lq * lk], .f32, .workspace), probabilities = try allocate([chunk * lq * lk], p.type, .workspace)
        let output = try allocate([p.pairs * lq * d], .f32, .workspace)
        for first in stride(from: 0, to: p.pairs, by: chunk) {
            let n = min(chunk, p.pairs - first), g = attentionGEMMs(l, p.type, pairs: n)
            try gemm(g.scores, a: p.k.address + UInt64(first * lk * d * size), b: p.q.address + UInt64(first * lq * d * size),
                     d: scores.address, alpha: l.scale, beta: 0)
            try launch(CUDAKernels.attentionSoftmax(p.type), grid: ((n * lq + 7) / 8, 1, 1), block: (256, 1, 1),
                       [probabilities.address, lse, scores.address, segments, i32(n), i32(first), i32(l.heads), i32(lq), i32(lk),
                        i32(l.queryOffset)])
            try gemm(g.output, a: p.v.address + UInt64(first * lk * d * size), b: probabilities.address,
                     d: output.address + UInt64(first * lq * d * 4), beta: 0)
        }
        try unpackHeads(out, output, length: lq, group: 1, layout: l)
    }

    /// The backward through GEMMs: dq, dk, dv (=) from the recomputed scores, the forward's
    /// log-sum-exp and D = Σ dOut·out per row (`delta`).
    func attentionGEMMBackward(dq: Tensor, dk: Tensor, dv: Tensor, dOut: Tensor, heads p: PackedHeads, lse: DevicePointer,
                               delta: DevicePointer, segments: DevicePointer, layout l: AttentionLayout) throws {
        let lq = l.queryLength, lk = l.keyLength, d = l.headDim, size = p.type.blockBytes, group = l.heads / l.kvHeads
        let packedOut = try allocate([p.pairs * lq * d], p.type, .workspace)
        try launch(CUDAKernels.attentionPack(.f32, to: p.type), elements: packedOut.count,
                   [packedOut.address, dOut.address, i32(l.batch), i32(lq), i32(l.heads), i32(1), i32(d)])
        let chunk = attentionChunk(l, bytesPerPair: lq * lk * (8 + 2 * size))
        let scores = try allocate([chunk * lq * lk], .f32, .workspace), dProbabilities = try allocate([chunk * lq * lk], .f32, .workspace)
        let probabilities = try allocate([chunk * lq * lk], p.type, .workspace), dScores = try allocate([chunk * lq * lk], p.type, .workspace)
        let dQueries = try allocate([p.pairs * lq * d], .f32, .workspace)
        let dKeys = try allocate([p.pairs * lk * d], .f32, .workspace), dValues = try allocate([p.pairs * lk * d], .f32, .workspace)
        for first in stride(from: 0, to: p.pairs, by: chunk) {
            let n = min(chunk, p.pairs - first), g = attentionGEMMs(l, p.type, pairs: n)
            let q = p.q.address + UInt64(first * lq * d * size), k = p.k.address + UInt64(first * lk * d * size)
            let v = p.v.address + UInt64(first * lk * d * size), o = packedOut.address + UInt64(first * lq * d * size)
            try gemm(g.scores, a: k, b: q, d: scores.address, alpha: l.scale, beta: 0)
            try gemm(g.dProbabilities, a: v, b: o, d: dProbabilities.address, beta: 0)
            try launch(CUDAKernels.attentionSoftmaxBackward(p.type), elements: n * lq * lk,
                       [probabilities.address, dScores.address, scores.address, dProbabilities.address, lse, delta, segments,
                        i32(n), i32(first), i32(l.heads), i32(lq), i32(lk), i32(l.queryOffset)])
            try gemm(g.dValues, a: o, b: probabilities.address, d: dValues.address + UInt64(first * lk * d * 4), beta: 0)
            try gemm(g.dQueries, a: k, b: dScores.address, d: dQueries.address + UInt64(first * lq * d * 4), alpha: l.scale, beta: 0)
            try gemm(g.dKeys, a: q, b: dScores.address, d: dKeys.address + UInt64(first * lk * d * 4), alpha: l.scale, beta: 0)
        }
        try unpackHeads(dq, dQueries, length: lq, group: 1, layout: l)
        try unpackHeads(dk, dKeys, length: lk, group: group, layout: l)
        try unpackHeads(dv, dValues, length: lk, group: group, layout: l)
    }
}
