// ScratchSizing: how a backend sizes the scratch of its chunked ops, shared with MemoryPlan so the
// prediction follows the code.

/// The chunk sizes of chunked ops.
public enum ScratchSizing {
    /// Rows of logits per chunk of the GPU's fused head and cross-entropy: a `tileBytes` chunk of
    /// f32 logits, but at least 512 rows, so each GEMM reads the head (a vocabulary of 128,256 ×
    /// 4,096 is 1 GiB in bf16) once per 512 rows or more rather than once per a hundred-odd.
    public static func crossEntropyChunkRows(rows: Int, vocabulary: Int, tileBytes: Int) -> Int {
        max(1, min(rows, max(512, tileBytes / 4 / max(vocabulary, 1))))
    }

    /// Rows of logits per chunk of the CPU's fused head and cross-entropy: 48 MiB of f32 logits at
    /// a 49,152-token vocabulary, and GEMMs about 10% faster than at 128 rows (each thread's share
    /// of the head is packed for more rows).
    public static let cpuCrossEntropyChunkRows = 256
}
