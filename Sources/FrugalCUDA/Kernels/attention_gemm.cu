// attention_gemm.cu: the passes around attention's batched GEMMs (CUDAAttentionGEMM.swift) —
// heads packed into contiguous (pair, position, d) matrices for cuBLASLt's strided batches on the
// tensor cores, and the masked softmax (forward) and its gradient (backward) over one chunk of
// (sequence, head) pairs' scores S = scale·q·kᵀ, (pairs, lq, lk) f32 — for one block of queries
// at a time, lq and lk are the block's and the keys it sees, q_offset the block's first query's
// key position, and lq_total and lk_total the full lengths (the strides of lse, delta and
// segments). Activations are packed from their dtype into the GEMMs' operand dtype; outputs are
// unpacked from f32 into theirs.
//
// Visibility is attention.cu's: query i sits at key position q_offset + i and sees keys
// j ≤ q_offset + i of its own segment (segments: (batch, lk) ids, or null). A query that sees
// no key gets P = 0 and lse = −∞. Pair p of a chunk is (sequence, head) bh = first + p, with
// bh = b·heads + h; lse and delta are (batch·heads, lq), as attention.cu's.
#include "common.cuh"

__device__ __forceinline__ bool gemm_visible(int i, int j, int q_offset, const int* seg) {
    return j <= q_offset + i && (!seg || seg[j] == seg[q_offset + i]);
}

// dst[bh, t, c] = src[b·len + t, (h / group)·d + c] (=): heads of a (batch·len, heads/group·d)
// matrix made contiguous, each source head repeated for the `group` query heads that share it.
template <typename S, typename D>
__device__ void attention_pack(D* dst, const S* src, int batch, int len, int heads, int group, int d) {
    const long long n = (long long)batch * heads * len * d;
    const int source_heads = heads / group;
    FRUGAL_GRID_STRIDE(idx, n) {
        const int c = idx % d;
        const long long r = idx / d;
        const int t = r % len;
        const long long bh = r / len;
        const int h = bh % heads, b = bh / heads;
        dst[idx] = from_float<D>(to_float(src[((long long)b * len + t) * source_heads * d + (long long)(h / group) * d + c]));
    }
}

// dst[b·len + t, g·d + c] = Σ_{h in group g} src[b·heads + h, t, c] (=): the inverse of
// attention_pack, summing the gradients of the heads that shared a source head.
template <typename D>
__device__ void attention_unpack(D* dst, const float* src, int batch, int len, int heads, int group, int d) {
    const int groups = heads / group;
    const long long n = (long long)batch * len * groups * d;
    FRUGAL_GRID_STRIDE(idx, n) {
        const int c = idx % d;
        const long long r = idx / d;
        const int g = r % groups;
        const long long bt = r / groups;
        const int t = bt % len, b = bt / len;
        float sum = 0.f;
        for (int j = 0; j < group; j++) sum += src[(((long long)b * heads + g * group + j) * len + t) * d + c];
        dst[idx] = from_float<D>(sum);
    }
}

// One warp per score row (pair p, query i) of the chunk: P = softmax over the visible keys (=,
// as T), lse (=, row i of pair bh at lse[bh·lq_total + i]). Grid ⌈pairs·lq / 8⌉, block 256.
template <typename T>
__device__ void attention_softmax(T* probabilities, float* lse, const float* scores, const int* segments, int pairs, int first,
                                  int heads, int lq, int lk, int q_offset, int lq_total, int lk_total) {
    const long long row = (long long)blockIdx.x * 8 + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= (long long)pairs * lq) return;
    const int p = row / lq, i = row % lq, bh = first + p, b = bh / heads;
    const int* seg = segments ? segments + (long long)b * lk_total : nullptr;
    const float* s = scores + row * lk;
    T* out = probabilities + row * lk;
    const int limit = min(lk, q_offset + i + 1);
    // One pass for the maximum and the sum (online softmax per lane), then the lanes combined.
    float lane_max = -FRUGAL_INFINITY, lane_sum = 0.f;
    for (int j = lane; j < limit; j += 32) {
        if (!gemm_visible(i, j, q_offset, seg)) continue;
        const float x = s[j];
        if (x > lane_max) { lane_sum = lane_sum * expf(lane_max - x) + 1.f; lane_max = x; }
        else lane_sum += expf(x - lane_max);
    }
    const float m = warp_max(lane_max);
    const float sum = warp_sum(lane_max == -FRUGAL_INFINITY ? 0.f : lane_sum * expf(lane_max - m));
    const float inverse = sum > 0.f ? 1.f / sum : 0.f;
    for (int j = lane; j < lk; j += 32) {
        const bool visible = j < limit && gemm_visible(i, j, q_offset, seg);
        out[j] = from_float<T>(visible ? expf(s[j] - m) * inverse : 0.f);
    }
    if (lane == 0) lse[(long long)bh * lq_total + i] = sum > 0.f ? m + logf(sum) : -FRUGAL_INFINITY;
}

// The softmax's gradient for one chunk, elementwise: P = exp(S − lse) on visible keys, and
// dS = P·(dP − delta) (=, both as T; lse and delta of row i of pair bh at bh·lq_total + i).
// Grid-stride over pairs·lq·lk.
template <typename T>
__device__ void attention_softmax_backward(T* probabilities, T* d_scores, const float* scores, const float* d_probabilities,
                                           const float* lse, const float* delta, const int* segments, int pairs, int first,
                                           int heads, int lq, int lk, int q_offset, int lq_total, int lk_total) {
    const long long n = (long long)pairs * lq * lk;
    FRUGAL_GRID_STRIDE(idx, n) {
        const int j = idx % lk;
        const long long row = idx / lk;
        const int p = row / lq, i = row % lq, bh = first + p, b = bh / heads;
        const int* seg = segments ? segments + (long long)b * lk_total : nullptr;
        const long long at = (long long)bh * lq_total + i;
        const float probability = gemm_visible(i, j, q_offset, seg) && lse[at] > -FRUGAL_INFINITY ? expf(scores[idx] - lse[at]) : 0.f;
        probabilities[idx] = from_float<T>(probability);
        d_scores[idx] = from_float<T>(probability * (d_probabilities[idx] - delta[at]));
    }
}

// attention_pack_<source>_to_<packed>
#define ATTENTION_PACK(ss, S, sd, D)                                                                                  \
    extern "C" __global__ void attention_pack_##ss##_to_##sd(D* dst, const S* src, int batch, int len, int heads,      \
                                                              int group, int d) {                                     \
        attention_pack<S, D>(dst, src, batch, len, heads, group, d);                                                  \
    }
FRUGAL_DTYPE_PAIRS(ATTENTION_PACK)

// attention_softmax_<probabilities>, attention_softmax_backward_<probabilities>, attention_unpack_<destination>
#define ATTENTION_GEMM(suffix, T)                                                                                   \
    extern "C" __global__ void __launch_bounds__(256) attention_softmax_##suffix(                                   \
        T* probabilities, float* lse, const float* scores, const int* segments, int pairs, int first, int heads,    \
        int lq, int lk, int q_offset, int lq_total, int lk_total) {                                                 \
        attention_softmax<T>(probabilities, lse, scores, segments, pairs, first, heads, lq, lk, q_offset,           \
                             lq_total, lk_total);                                                                   \
    }                                                                                                               \
    extern "C" __global__ void attention_softmax_backward_##suffix(                                                 \
        T* probabilities, T* d_scores, const float* scores, const float* d_probabilities, const float* lse,         \
        const float* delta, const int* segments, int pairs, int first, int heads, int lq, int lk, int q_offset,     \
        int lq_total, int lk_total) {                                                                               \
        attention_softmax_backward<T>(probabilities, d_scores, scores, d_probabilities, lse, delta, segments, pairs, \
                                      first, heads, lq, lk, q_offset, lq_total, lk_total);                          \
    }                                                                                                               \
    extern "C" __global__ void attention_unpack_##suffix(T* dst, const float* src, int batch, int len, int heads,    \
                                                          int group, int d) {                                       \
        attention_unpack<T>(dst, src, batch, len, heads, group, d);                                                 \
    }
FRUGAL_DTYPES(ATTENTION_GEMM)
