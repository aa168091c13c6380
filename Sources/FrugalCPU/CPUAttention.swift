// CPUAttention: causal grouped-query attention and its backward on the CPU, a block of query
// rows at a time with BLAS GEMMs (the full score matrix is never stored).
import Foundation
import FrugalCore

extension CPUBackend {
    /// Query rows whose scores exist at once, per worker.
    static let attentionQueryBlock = 64
    /// Multiply-adds of `Q·Kᵀ` below which decoding attention runs on one thread.
    static let attentionParallelWork = 1 << 20

    // MARK: - Attention

    /// For each (sequence, head, block of queries): `S = scale·Q·Kᵀ` over the keys the block's
    /// last query may see (one GEMM), `P = softmax(S)` row by row under the causal and segment
    /// masks, `out = P·V` (one GEMM). `logSumExp` is left alone: the backward recomputes `P`
    /// (`usesAttentionStatistics` is false). 16-bit q, k and v are widened into workspace, and
    /// the f32 output is rounded into a 16-bit `out`.
    public func attention(_ out: Tensor, q: Tensor, k: Tensor, v: Tensor, layout: AttentionLayout, logSumExp: Tensor?) {
        profile.measure("attention") {
            let l = layout, d = l.headDim, group = l.heads / l.kvHeads
            let qStride = l.heads * d, kStride = l.kvHeads * d
            precondition(q.count == l.batch * l.queryLength * qStride && out.count == q.count
                         && k.count >= l.batch * l.keyLength * kStride && v.count >= l.batch * l.keyLength * kStride,
                         "attention: shapes do not match the layout")
            if q.dtype != .f32 || k.dtype != .f32 || v.dtype != .f32 || out.dtype != .f32 {
                precondition(k.dtype == q.dtype && v.dtype == q.dtype && out.dtype == q.dtype,
                             "attention: q \(q.dtype), k \(k.dtype), v \(v.dtype), out \(out.dtype)")
                let (q, k, v) = (widened(q), widened(k), widened(v))
                return withFloatOutput(out, reading: false) { attention($0, q: q, k: k, v: v, layout: l, logSumExp: logSumExp) }
            }
            let qs = q.floats.baseAddress!, ks = k.floats.baseAddress!, vs = v.floats.baseAddress!
            let y = out.floats.baseAddress!
            if l.queryLength == 1 {
                decodingAttention(y, qs, ks, vs, layout: l)
                return
            }
            let block = max(1, min(l.queryLength, Self.attentionQueryBlock))
            let blocksPerHead = (l.queryLength + block - 1) / block
            let items = l.batch * l.heads * blocksPerHead
            let workers = min(workerCount, items)
            // (workers, block, keyLength) one block of probabilities per worker
            let scratch = empty([workers, block * l.keyLength], .f32, .workspace)
            let base = scratch.floats.baseAddress!
            withExtendedLifetime(scratch) {
                withSegments(l) { segments in
                    parallelItems(items, workers: workers) { item, worker in
                        let bh = item / blocksPerHead, i0 = item % blocksPerHead * block
                        let b = bh / l.heads, h = bh % l.heads, kh = h / group
                        let rows = min(block, l.queryLength - i0)
                        let keys = min(l.keyLength, l.queryOffset + i0 + rows)
                        let p = base + worker * block * l.keyLength
                        let qi = qs + (b * l.queryLength + i0) * qStride + h * d
                        let keyBase = b * l.keyLength * kStride + kh * d
                        let yi = y + (b * l.queryLength + i0) * qStride + h * d
                        // (rows, keys) scores, then probabilities
                        blas.sgemmSerial(transposeA: false, transposeB: true, m: rows, n: keys, k: d, alpha: l.scale,
                                         a: qi, lda: qStride, b: ks + keyBase, ldb: kStride, beta: 0, c: p, ldc: keys)
                        for r in 0..<rows {
                            Self.softmaxRow(p + r * keys, keys: keys, layout: l, segments: segments, batch: b, query: i0 + r)
                        }
                        blas.sgemmSerial(transposeA: false, transposeB: false, m: rows, n: d, k: keys, alpha: 1,
                                         a: p, lda: keys, b: vs + keyBase, ldb: kStride, beta: 0, c: yi, ldc: qStride)
                    }
                }
            }
        }
    }

    /// One query per sequence (decoding): the query heads that share a kv head make one
    /// (group, headDim) matrix, so each kv head takes two small GEMMs, `S = scale·Q_g·Kᵀ` and
    /// `out_g = P·V`; on one thread unless there is real work.
    private func decodingAttention(_ y: UnsafeMutablePointer<Float>, _ qs: UnsafePointer<Float>, _ ks: UnsafePointer<Float>,
                                   _ vs: UnsafePointer<Float>, layout l: AttentionLayout) {
        let d = l.headDim, group = l.heads / l.kvHeads, qStride = l.heads * d, kStride = l.kvHeads * d
        let keys = min(l.keyLength, l.queryOffset + 1), items = l.batch * l.kvHeads
        let work = l.batch * l.heads * keys * d
        let workers = min(work < Self.attentionParallelWork ? 1 : workerCount, items)
        // (workers, group, keys) the probabilities of one kv head's queries per worker
        let scratch = empty([workers, group * max(keys, 1)], .f32, .workspace)
        let base = scratch.floats.baseAddress!
        withExtendedLifetime(scratch) {
            withSegments(l) { segments in
                parallelItems(items, workers: workers) { item, worker in
                    let b = item / l.kvHeads, kh = item % l.kvHeads
                    let p = base + worker * group * keys
                    let at = b * qStride + kh * group * d, keyBase = b * l.keyLength * kStride + kh * d
                    blas.sgemmSerial(transposeA: false, transposeB: true, m: group, n: keys, k: d, alpha: l.scale,
                                     a: qs + at, lda: d, b: ks + keyBase, ldb: kStride, beta: 0, c: p, ldc: keys)
                    for r in 0..<group {
                        Self.softmaxRow(p + r * keys, keys: keys, layout: l, segments: segments, batch: b, query: 0)
                    }
                    blas.sgemmSerial(transposeA: false, transposeB: false, m: group, n: d, k: keys, alpha: 1,
                                     a: p, lda: keys, b: vs + keyBase, ldb: kStride, beta: 0, c: y + at, ldc: d)
                }
            }
        }
    }

    /// Gradients of `attention` (=), recomputing the softmax from q and k. Per (sequence, kv
    /// head) — so each worker owns the dk and dv rows it accumulates — and per query head of its
    /// group and block of queries:
    ///
    /// `S = scale·Q·Kᵀ`, `P = softmax(S)`, `dP = dOut·Vᵀ`, `D_i = Σ_j P_ij·dP_ij`,
    /// `dS = P ∘ (dP − D)`, then `dQ = scale·dS·K` (=), `dK += scale·dSᵀ·Q`, `dV += Pᵀ·dOut`.
    /// The forward's `out` and `logSumExp` are not needed: `P` is recomputed a block at a time.
    /// 16-bit q, k and v are widened into workspace first.
    public func attentionBackward(dq: Tensor, dk: Tensor, dv: Tensor, dOut: Tensor, q: Tensor, k: Tensor, v: Tensor,
                                  layout: AttentionLayout, out: Tensor?, logSumExp: Tensor?) {
        profile.measure("attentionBackward") {
            let l = layout, d = l.headDim, group = l.heads / l.kvHeads
            let qStride = l.heads * d, kStride = l.kvHeads * d
            precondition(q.count == l.batch * l.queryLength * qStride && dq.count == q.count && dOut.count == q.count
                         && k.count == l.batch * l.keyLength * kStride && dk.count == k.count && v.count == k.count
                         && dv.count == k.count, "attentionBackward: shapes do not match the layout")
            precondition(k.dtype == q.dtype && v.dtype == q.dtype, "attentionBackward: q \(q.dtype), k \(k.dtype), v \(v.dtype)")
            let (q, k, v) = (widened(q), widened(k), widened(v))
            defer { withExtendedLifetime((q, k, v)) {} }
            let qs = q.floats.baseAddress!, ks = k.floats.baseAddress!, vs = v.floats.baseAddress!
            let gOut = dOut.floats.baseAddress!, gq = dq.floats.baseAddress!
            let gk = dk.floats.baseAddress!, gv = dv.floats.baseAddress!
            let block = max(1, min(l.queryLength, Self.attentionQueryBlock))
            let items = l.batch * l.kvHeads
            let workers = min(workerCount, items)
            // (workers, 2, block, keyLength) probabilities and their gradient, per worker
            let scratch = empty([workers, 2 * block * l.keyLength], .f32, .workspace)
            let base = scratch.floats.baseAddress!
            withExtendedLifetime(scratch) {
                withSegments(l) { segments in
                    parallelItems(items, workers: workers) { item, worker in
                        let b = item / l.kvHeads, kh = item % l.kvHeads
                        let p = base + worker * 2 * block * l.keyLength, dp = p + block * l.keyLength
                        let keyBase = b * l.keyLength * kStride + kh * d
                        let kb = ks + keyBase, vb = vs + keyBase, gkb = gk + keyBase, gvb = gv + keyBase
                        for j in 0..<l.keyLength {
                            for c in 0..<d { gkb[j * kStride + c] = 0; gvb[j * kStride + c] = 0 }
                        }
                        for h in (kh * group)..<((kh + 1) * group) {
                            for i0 in stride(from: 0, to: l.queryLength, by: block) {
                                let rows = min(block, l.queryLength - i0)
                                let keys = min(l.keyLength, l.queryOffset + i0 + rows)
                                let at = (b * l.queryLength + i0) * qStride + h * d
                                let qi = qs + at, gOuti = gOut + at
                                blas.sgemmSerial(transposeA: false, transposeB: true, m: rows, n: keys, k: d, alpha: l.scale,
                                                 a: qi, lda: qStride, b: kb, ldb: kStride, beta: 0, c: p, ldc: keys)
                                blas.sgemmSerial(transposeA: false, transposeB: true, m: rows, n: keys, k: d, alpha: 1,
                                                 a: gOuti, lda: qStride, b: vb, ldb: kStride, beta: 0, c: dp, ldc: keys)
                                for r in 0..<rows {
                                    let pr = p + r * keys, dpr = dp + r * keys
                                    Self.softmaxRow(pr, keys: keys, layout: l, segments: segments, batch: b, query: i0 + r)
                                    let delta = VectorMath.dot(pr, dpr, keys)
                                    // dS = P·(dP − D), in place of dP
                                    for j in 0..<keys { dpr[j] = pr[j] * (dpr[j] - delta) }
                                }
                                blas.sgemmSerial(transposeA: false, transposeB: false, m: rows, n: d, k: keys, alpha: l.scale,
                                                 a: dp, lda: keys, b: kb, ldb: kStride, beta: 0, c: gq + at, ldc: qStride)
                                blas.sgemmSerial(transposeA: true, transposeB: false, m: keys, n: d, k: rows, alpha: l.scale,
                                                 a: dp, lda: keys, b: qi, ldb: qStride, beta: 1, c: gkb, ldc: kStride)
                                blas.sgemmSerial(transposeA: true, transposeB: false, m: keys, n: d, k: rows, alpha: 1,
                                                 a: p, lda: keys, b: gOuti, ldb: qStride, beta: 1, c: gvb, ldc: kStride)
                            }
                        }
                    }
                }
            }
        }
    }

    // MARK: - Softmax of one row

    /// Calls `body` with the layout's segment ids (`batch × keyLength`), or nil without packing.
    private func withSegments<R>(_ l: AttentionLayout, _ body: (UnsafePointer<Int32>?) -> R) -> R {
        guard let segments = l.segments else { return body(nil) }
        precondition(segments.count == l.batch * l.keyLength, "attention: \(segments.count) segment ids")
        return segments.withUnsafeBufferPointer { body($0.baseAddress!) }
    }

    /// Turns query `query`'s scores against keys `0..<keys` into probabilities in place: keys
    /// past the causal limit and keys of another segment get probability 0; a query that sees
    /// no key gets a row of zeros.
    private static func softmaxRow(_ row: UnsafeMutablePointer<Float>, keys: Int, layout l: AttentionLayout,
                                   segments: UnsafePointer<Int32>?, batch b: Int, query i: Int) {
        let limit = min(keys, l.queryOffset + i + 1)
        for j in limit..<keys { row[j] = 0 }
        if let segments {
            let keySegments = segments + b * l.keyLength, own = keySegments[l.queryOffset + i]
            for j in 0..<limit where keySegments[j] != own { row[j] = -.infinity }
        }
        let maximum = VectorMath.maximum(row, limit)
        if maximum == -.infinity {
            for j in 0..<limit { row[j] = 0 }
            return
        }
        let total = VectorMath.expShifted(row, row, limit, shift: maximum)
        let inverse = Float(1 / total)
        for j in 0..<limit { row[j] *= inverse }
    }
}
