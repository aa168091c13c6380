// CUDAAttention: causal grouped-query attention and its backward on the GPU. q, k, v and out are in
// the activation dtype (f32, f16 or bf16), dOut and the gradients f32, the log-sum-exp f32.
// Training-sized inputs run on the tensor cores — f16 and bf16 activations with a head dimension of
// 64, 96 or 128 through Kernels/flash_attention.cu, forward and backward, the rest through batched
// GEMMs a chunk of heads at a time (CUDAAttentionGEMM.swift) — and decoding through
// FlashAttention-2-style kernels (Kernels/attention.cu); in the kernels the score matrix never
// exists. The forward writes each row's log-sum-exp where the caller keeps it, and the backward
// reuses it with the forward's output (or recomputes both).
import Foundation
import FrugalCore

extension CUDABackend {
    /// Threads per attention block, and query (or key) rows per block: as attention.cu's WARPS,
    /// ROWS_PER_BLOCK and TILE.
    static let attentionThreads = 256, attentionRows = 16, attentionTile = 32, attentionMaxHeadDim = 256

    // MARK: - Attention

    public func attention(_ out: Tensor, q: Tensor, k: Tensor, v: Tensor, layout: AttentionLayout, logSumExp: Tensor?) {
        check(layout, q: q, k: k, v: v, out: out)
        let rows = layout.batch * layout.heads * layout.queryLength
        precondition(out.dtype == q.dtype, "attention: out \(out.dtype) for q \(q.dtype)")
        precondition(logSumExp.map { $0.count == rows && $0.dtype == .f32 } ?? true, "attention: logSumExp of \(rows) f32 values")
        must("attention \(layout.batch)×\(layout.heads)×\(layout.queryLength)") {
            let lse = try logSumExp ?? allocate([rows], .f32, .workspace)
            let segments = try layout.segments.map { try stage($0) }
            if attentionUsesFlashKernels(layout, q, k, v, out) {
                try flashAttentionForward(out: out.address, lse: lse.address, q: q, k: k, v: v, segments: segments.address, layout: layout)
            } else if attentionUsesGEMMs(layout, q) {
                try attentionGEMMForward(out: out, lse: lse.address, heads: packHeads(q: q, k: k, v: v, layout: layout),
                                         segments: segments.address, layout: layout)
            } else {
                try attentionForward(out: out.address, lse: lse.address, q: q, k: k, v: v, segments: segments.address, layout: layout)
            }
        }
    }

    /// Gradients of `attention` (=): the forward's output and log-sum-exp (recomputed unless
    /// given), then D = Σ dOut·out per row, then dq, dk, dv — through GEMMs, or with the kernels:
    /// dq one block per query tile, dk and dv one block per key tile of a kv head, over every
    /// query head of its group.
    public func attentionBackward(dq: Tensor, dk: Tensor, dv: Tensor, dOut: Tensor, q: Tensor, k: Tensor, v: Tensor,
                                  layout l: AttentionLayout, out given: Tensor?, logSumExp: Tensor?) {
        check(l, q: q, k: k, v: v, out: dOut)
        precondition(dq.count == q.count && dk.count == k.count && dv.count == k.count && dOut.dtype == .f32
                     && dq.dtype == .f32 && dk.dtype == .f32 && dv.dtype == .f32,
                     "attentionBackward: shapes do not match the layout, or dOut, dq, dk, dv are not f32")
        must("attentionBackward \(l.batch)×\(l.heads)×\(l.queryLength)") {
            let rows = l.batch * l.heads * l.queryLength, d = l.headDim
            let delta = try allocate([rows], .f32, .workspace)
            let segments = try l.segments.map { try stage($0) }
            let flash = attentionUsesFlashKernels(l, q, k, v)
            let packed = !flash && attentionUsesGEMMs(l, q) ? try packHeads(q: q, k: k, v: v, layout: l) : nil
            let out: Tensor, lse: Tensor
            if let given, let logSumExp, given.dtype == q.dtype {
                (out, lse) = (given, logSumExp)
            } else {
                (out, lse) = (try allocate([q.count], q.dtype, .workspace), try allocate([rows], .f32, .workspace))
                if flash {
                    try flashAttentionForward(out: out.address, lse: lse.address, q: q, k: k, v: v, segments: segments.address, layout: l)
                } else if let packed {
                    try attentionGEMMForward(out: out, lse: lse.address, heads: packed, segments: segments.address, layout: l)
                } else {
                    try attentionForward(out: out.address, lse: lse.address, q: q, k: k, v: v, segments: segments.address, layout: l)
                }
            }
            let pairs = l.batch * l.queryLength * l.heads, warps = Self.attentionThreads / 32
            try launch(CUDAKernels.attentionDelta(q.dtype), grid: ((pairs + warps - 1) / warps, 1, 1),
                       block: (Self.attentionThreads, 1, 1),
                       [delta.address, dOut.address, out.address, i32(l.batch), i32(l.queryLength), i32(l.heads), i32(d)])
            if flash {
                return try flashAttentionBackward(dq: dq, dk: dk, dv: dv, dOut: dOut, q: q, k: k, v: v, lse: lse.address,
                                                  delta: delta.address, segments: segments.address, layout: l)
            }
            if let packed {
                return try attentionGEMMBackward(dq: dq, dk: dk, dv: dv, dOut: dOut, heads: packed, lse: lse.address,
                                                 delta: delta.address, segments: segments.address, layout: l)
            }
            let common: [any KernelArgument] = [segments.address, i32(l.batch), i32(l.queryLength), i32(l.keyLength),
                                                i32(l.queryOffset), i32(l.heads), i32(l.kvHeads), i32(d), l.scale]
            let queryShared = (2 * Self.attentionRows * d + 2 * Self.attentionTile * (d + 1)) * 4
            try launch(CUDAKernels.attentionBackwardQuery(q.dtype),
                       grid: ((l.queryLength + Self.attentionRows - 1) / Self.attentionRows, l.batch * l.heads, 1),
                       block: (Self.attentionThreads, 1, 1), sharedMemory: queryShared,
                       [dq.address, q.address, k.address, v.address, dOut.address, lse.address, delta.address] + common)
            let keyShared = (2 * Self.attentionRows * d + 2 * Self.attentionTile * (d + 1) + 2 * Self.attentionTile) * 4
            try launch(CUDAKernels.attentionBackwardKey(q.dtype),
                       grid: ((l.keyLength + Self.attentionRows - 1) / Self.attentionRows, l.batch * l.kvHeads, 1),
                       block: (Self.attentionThreads, 1, 1), sharedMemory: keyShared,
                       [dk.address, dv.address, q.address, k.address, v.address, dOut.address, lse.address, delta.address] + common)
        }
    }

    /// Whether training-sized attention of `headDim` with `activations` runs on the tensor-core
    /// kernels (else through batched GEMMs), as a benchmark records it.
    public func usesTensorCoreAttention(headDim: Int, activations: DType) -> Bool {
        options.flashAttention && (activations == .f16 || activations == .bf16) && AttentionLayout.tensorCoreHeadDims.contains(headDim)
    }

    /// Whether `attention` of this layout runs the tensor-core kernels (`Options.flashAttention`):
    /// f16 or bf16 activations, a head dimension of 64, 96 or 128, 8 queries or more, and tensors at
    /// 4-byte boundaries (the kernels read pairs of values as one word).
    func attentionUsesFlashKernels(_ l: AttentionLayout, _ q: Tensor, _ others: Tensor...) -> Bool {
        usesTensorCoreAttention(headDim: l.headDim, activations: q.dtype) && l.queryLength >= 8
            && ([q] + others).allSatisfy { $0.address % 4 == 0 }
    }

    /// The tensor-core forward (Kernels/flash_attention.cu): `out` (=) and the log-sum-exp (=),
    /// 64 queries a block.
    func flashAttentionForward(out: DevicePointer, lse: DevicePointer, q: Tensor, k: Tensor, v: Tensor, segments: DevicePointer,
                               layout l: AttentionLayout) throws {
        let shared = 2 * Self.flashRows * (l.headDim + 8) * q.dtype.blockBytes
        try launch(CUDAKernels.flashAttentionForward(q.dtype, headDim: l.headDim),
                   grid: ((l.queryLength + Self.flashRows - 1) / Self.flashRows, l.batch * l.heads, 1), block: (128, 1, 1),
                   sharedMemory: shared,
                   [out, lse, q.address, k.address, v.address, segments, i32(l.queryLength), i32(l.keyLength), i32(l.queryOffset),
                    i32(l.heads), i32(l.kvHeads), l.scale])
    }

    /// The tensor-core backward: dq (=) a block of 64 queries at a time over the keys they see,
    /// then dk and dv (=) a block of 64 keys of a kv head at a time over every query head of its
    /// group — each gradient written once, no atomics.
    func flashAttentionBackward(dq: Tensor, dk: Tensor, dv: Tensor, dOut: Tensor, q: Tensor, k: Tensor, v: Tensor, lse: DevicePointer,
                                delta: DevicePointer, segments: DevicePointer, layout l: AttentionLayout) throws {
        let tile = Self.flashRows * (l.headDim + 8) * q.dtype.blockBytes
        let common: [any KernelArgument] = [q.address, k.address, v.address, dOut.address, lse, delta, segments, i32(l.queryLength),
                                            i32(l.keyLength), i32(l.queryOffset), i32(l.heads), i32(l.kvHeads), l.scale]
        try launch(CUDAKernels.flashAttentionBackwardQuery(q.dtype, headDim: l.headDim),
                   grid: ((l.queryLength + Self.flashRows - 1) / Self.flashRows, l.batch * l.heads, 1), block: (128, 1, 1),
                   sharedMemory: 2 * tile, [dq.address] + common)
        try launch(CUDAKernels.flashAttentionBackwardKey(q.dtype, headDim: l.headDim),
                   grid: ((l.keyLength + Self.flashRows - 1) / Self.flashRows, l.batch * l.kvHeads, 1), block: (128, 1, 1),
                   sharedMemory: 4 * tile + 2 * Self.flashRows * 4, [dk.address, dv.address] + common)
    }

    /// Queries (or keys) per block and keys (or queries) per tile of the tensor-core kernels
    /// (flash_attention.cu's FA_ROWS, FA_TILE).
    static let flashRows = 64

    /// The forward kernel: `out` (=) and the log-sum-exp per (sequence, head, query) (=).
    func attentionForward(out: DevicePointer, lse: DevicePointer, q: Tensor, k: Tensor, v: Tensor, segments: DevicePointer,
                          layout l: AttentionLayout) throws {
        let d = l.headDim
        let shared = (Self.attentionRows * d + Self.attentionTile * (d + 1) + Self.attentionTile * d) * 4
        try launch(CUDAKernels.attentionForward(q.dtype),
                   grid: ((l.queryLength + Self.attentionRows - 1) / Self.attentionRows, l.batch * l.heads, 1),
                   block: (Self.attentionThreads, 1, 1), sharedMemory: shared,
                   [out, lse, q.address, k.address, v.address, segments, i32(l.batch), i32(l.queryLength), i32(l.keyLength),
                    i32(l.queryOffset), i32(l.heads), i32(l.kvHeads), i32(d), l.scale])
    }

    private func check(_ l: AttentionLayout, q: Tensor, k: Tensor, v: Tensor, out: Tensor) {
        precondition(l.headDim <= Self.attentionMaxHeadDim, "attention: head dimension \(l.headDim) > \(Self.attentionMaxHeadDim)")
        precondition(l.kvHeads > 0 && l.heads % l.kvHeads == 0, "attention: \(l.heads) heads, \(l.kvHeads) kv heads")
        precondition(q.count == l.batch * l.queryLength * l.heads * l.headDim && out.count == q.count
                     && k.count == l.batch * l.keyLength * l.kvHeads * l.headDim && v.count == k.count
                     && Self.sameActivations(q, k, v),
                     "attention: q \(q.shape), k \(k.shape), v \(v.shape), out \(out.shape) do not match the layout")
        if let segments = l.segments { precondition(segments.count == l.batch * l.keyLength, "attention: segments") }
    }
}
