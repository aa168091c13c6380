// CPUAttention: causal grouped-query attention and its backward on the CPU, one query row of
// scores at a time (the score matrix is never stored).
import Foundation
import FrugalCore

extension CPUBackend {
    // MARK: - Attention

    public func attention(_ out: Tensor, q: Tensor, k: Tensor, v: Tensor, layout: AttentionLayout) {
        let l = layout, d = l.headDim, group = l.heads / l.kvHeads
        let qs = q.floats.baseAddress!, ks = k.floats.baseAddress!, vs = v.floats.baseAddress!
        let y = out.floats.baseAddress!
        let qStride = l.heads * d, kStride = l.kvHeads * d
        parallelChunks(l.batch * l.heads, minimumChunk: 1) { range in
            var scores = [Float](repeating: 0, count: l.keyLength)
            for bh in range {
                let b = bh / l.heads, h = bh % l.heads, kh = h / group
                let keys = ks + b * l.keyLength * kStride + kh * d, values = vs + b * l.keyLength * kStride + kh * d
                for i in 0..<l.queryLength {
                    let qi = qs + (b * l.queryLength + i) * qStride + h * d
                    let limit = min(l.keyLength, l.queryOffset + i + 1)
                    let maximum = Self.maskedScores(&scores, query: qi, keys: keys, limit: limit, layout: l, batch: b, row: i)
                    let yi = y + (b * l.queryLength + i) * qStride + h * d
                    for c in 0..<d { yi[c] = 0 }
                    if maximum == -.infinity { continue }
                    var total: Float = 0
                    for j in 0..<limit {
                        let e = scores[j] == -.infinity ? 0 : Float(exp(Double(scores[j] - maximum)))
                        scores[j] = e
                        total += e
                    }
                    let inv = 1 / total
                    for j in 0..<limit where scores[j] != 0 {
                        let p = scores[j] * inv
                        let vj = values + j * kStride
                        for c in 0..<d { yi[c] += p * vj[c] }
                    }
                }
            }
        }
    }

    /// Gradients of `attention` (=), in two passes that recompute the softmax from q and k:
    ///
    /// 1. per (sequence, head, query): `P = softmax(S)`, `dP_j = dOut·v_j`, `D = Σ_j P_j·dP_j`,
    ///    `dS_j = P_j·(dP_j − D)`, `dq = scale·Σ_j dS_j·k_j`; saves the row's max, 1/Σexp and D.
    /// 2. per (sequence, kv head, key), as FlashAttention-2 does: `dk_j = scale·Σ dS_ij·q_i` and
    ///    `dv_j = Σ P_ij·dOut_i` over the queries that see key j, in every query head of the kv
    ///    head's group — so each thread owns the rows it writes.
    public func attentionBackward(dq: Tensor, dk: Tensor, dv: Tensor, dOut: Tensor, q: Tensor, k: Tensor, v: Tensor,
                                  layout: AttentionLayout) {
        let l = layout, d = l.headDim, group = l.heads / l.kvHeads
        let qStride = l.heads * d, kStride = l.kvHeads * d
        precondition(q.count == l.batch * l.queryLength * qStride && dq.count == q.count && dOut.count == q.count
                     && k.count == l.batch * l.keyLength * kStride && dk.count == k.count && v.count == k.count
                     && dv.count == k.count, "attentionBackward: shapes do not match the layout")
        let qs = q.floats.baseAddress!, ks = k.floats.baseAddress!, vs = v.floats.baseAddress!
        let gOut = dOut.floats.baseAddress!, gq = dq.floats.baseAddress!
        let gk = dk.floats.baseAddress!, gv = dv.floats.baseAddress!
        // (3, batch·heads·queryLength) saved per query row: score max, 1/Σexp, D = Σ P·dP
        let rowCount = l.batch * l.heads * l.queryLength
        let statistics = zeros([3, rowCount], .f32, .workspace)
        let maxima = statistics.floats.baseAddress!, inverseTotals = maxima + rowCount, deltas = maxima + 2 * rowCount
        withExtendedLifetime(statistics) {
            // Pass 1: dq, and the statistics pass 2 needs.
            parallelChunks(l.batch * l.heads, minimumChunk: 1) { range in
                var probabilities = [Float](repeating: 0, count: l.keyLength)
                var dp = [Float](repeating: 0, count: l.keyLength)
                for bh in range {
                    let b = bh / l.heads, h = bh % l.heads, kh = h / group
                    let keys = ks + b * l.keyLength * kStride + kh * d, values = vs + b * l.keyLength * kStride + kh * d
                    for i in 0..<l.queryLength {
                        let row = bh * l.queryLength + i, offset = (b * l.queryLength + i) * qStride + h * d
                        let qi = qs + offset, gOuti = gOut + offset, gqi = gq + offset
                        let limit = min(l.keyLength, l.queryOffset + i + 1)
                        let maximum = Self.maskedScores(&probabilities, query: qi, keys: keys, limit: limit, layout: l,
                                                        batch: b, row: i)
                        maxima[row] = maximum
                        for c in 0..<d { gqi[c] = 0 }
                        if maximum == -.infinity { continue }
                        var total: Float = 0
                        for j in 0..<limit {
                            let e = probabilities[j] == -.infinity ? 0 : Float(exp(Double(probabilities[j] - maximum)))
                            probabilities[j] = e
                            total += e
                        }
                        let inv = 1 / total
                        var delta: Float = 0
                        for j in 0..<limit where probabilities[j] != 0 {
                            probabilities[j] *= inv
                            let vj = values + j * kStride
                            var dot: Float = 0
                            for c in 0..<d { dot += gOuti[c] * vj[c] }
                            dp[j] = dot
                            delta += probabilities[j] * dot
                        }
                        for j in 0..<limit where probabilities[j] != 0 {
                            let ds = probabilities[j] * (dp[j] - delta) * l.scale
                            let kj = keys + j * kStride
                            for c in 0..<d { gqi[c] += ds * kj[c] }
                        }
                        inverseTotals[row] = inv
                        deltas[row] = delta
                    }
                }
            }
            // Pass 2: dk and dv, one key row of one kv head per item.
            parallelChunks(l.batch * l.kvHeads * l.keyLength, minimumChunk: 16) { range in
                for item in range {
                    let b = item / (l.kvHeads * l.keyLength), kh = item / l.keyLength % l.kvHeads, j = item % l.keyLength
                    let offset = (b * l.keyLength + j) * kStride + kh * d
                    let kj = ks + offset, vj = vs + offset, gkj = gk + offset, gvj = gv + offset
                    for c in 0..<d { gkj[c] = 0; gvj[c] = 0 }
                    let keySegment = l.segments?[b * l.keyLength + j]
                    for i in min(l.queryLength, max(0, j - l.queryOffset))..<l.queryLength {
                        if let keySegment, l.segments![b * l.keyLength + l.queryOffset + i] != keySegment { continue }
                        for h in (kh * group)..<((kh + 1) * group) {
                            let row = (b * l.heads + h) * l.queryLength + i
                            if maxima[row] == -.infinity { continue }
                            let at = (b * l.queryLength + i) * qStride + h * d
                            let qi = qs + at, gOuti = gOut + at
                            var score: Float = 0, dot: Float = 0
                            for c in 0..<d { score += qi[c] * kj[c]; dot += gOuti[c] * vj[c] }
                            let p = Float(exp(Double(score * l.scale - maxima[row]))) * inverseTotals[row]
                            if p == 0 { continue }
                            let ds = p * (dot - deltas[row]) * l.scale
                            for c in 0..<d { gkj[c] += ds * qi[c]; gvj[c] += p * gOuti[c] }
                        }
                    }
                }
            }
        }
    }

    /// Scores of query `row` of sequence `b` against the keys `0..<limit` it may see:
    /// `scores[j] = scale·q·k_j`, or −∞ for a key of another segment.
    /// - Returns: the largest score, −∞ when the query sees no key.
    private static func maskedScores(_ scores: inout [Float], query: UnsafePointer<Float>, keys: UnsafePointer<Float>,
                                     limit: Int, layout l: AttentionLayout, batch b: Int, row i: Int) -> Float {
        let d = l.headDim, kStride = l.kvHeads * d
        let ownSegment = l.segments?[b * l.keyLength + l.queryOffset + i]
        var maximum = -Float.infinity
        for j in 0..<limit {
            if let ownSegment, l.segments![b * l.keyLength + j] != ownSegment {
                scores[j] = -.infinity; continue
            }
            let kj = keys + j * kStride
            var dot: Float = 0
            for c in 0..<d { dot += query[c] * kj[c] }
            scores[j] = dot * l.scale
            maximum = max(maximum, scores[j])
        }
        return maximum
    }
}
