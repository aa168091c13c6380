// attention.cu: causal grouped-query attention, forward and backward in the FlashAttention-2
// manner: keys are visited in tiles with an online softmax, the (queries × keys) score matrix
// never exists, and the forward saves each query row's log-sum-exp for the backward.
//
// Layouts (row-major): q, out, dout: (batch·lq, heads·d); k, v: (batch·lk, kv_heads·d);
// lse, delta: (batch·heads, lq). q, k, v and out are stored as T (the activations' dtype); dout,
// the gradients and the statistics are f32. Query i of a sequence sits at key position q_offset + i and sees
// keys j ≤ q_offset + i of its own segment (segments: (batch, lk) ids, or null for none).
// Scores are scale·q·k. A query that sees no key gets out = 0, lse = −∞, dq = 0.
#include "common.cuh"

#define MAX_HEAD_DIM 256
#define VALUES_PER_LANE (MAX_HEAD_DIM / 32)
#define WARPS 8
#define ROWS_PER_WARP 2
#define ROWS_PER_BLOCK (WARPS * ROWS_PER_WARP)  // queries per block (forward, dq) or keys per block (dk, dv)
#define TILE 32                                 // keys (forward, dq) or queries (dk, dv) per tile: one per lane

// Whether query i (of the sequence whose segments are `segments`) sees key j.
__device__ __forceinline__ bool attention_visible(int i, int j, int lq, int lk, int q_offset, const int* segments) {
    if (i >= lq || j >= lk || j > q_offset + i) return false;
    return !segments || segments[j] == segments[q_offset + i];
}

// Copies rows [first, first + count) of one head of a (rows, stride) matrix into shared memory
// with row pitch `pitch`, zero-filling rows at or past `limit`.
template <typename T>
__device__ __forceinline__ void load_tile(float* tile, int pitch, const T* source, long long stride, int first, int count,
                                          int limit, int d) {
    for (int idx = threadIdx.x; idx < count * d; idx += blockDim.x) {
        const int r = idx / d, c = idx % d, row = first + r;
        tile[r * pitch + c] = row < limit ? to_float(source[(long long)row * stride + c]) : 0.f;
    }
}

// Forward: out (=) and lse (=). Grid (⌈lq/ROWS_PER_BLOCK⌉, batch·heads), block 32·WARPS.
// Shared memory: ROWS_PER_BLOCK·d (queries) + TILE·(d+1) (keys) + TILE·d (values) floats.
template <typename T>
__device__ void attention_forward(T* out, float* lse, const T* q, const T* k, const T* v, const int* segments,
                                  int lq, int lk, int q_offset, int heads, int kv_heads, int d, float scale) {
    extern __shared__ float shared[];
    float* qs = shared;
    float* ks = qs + ROWS_PER_BLOCK * d;
    float* vs = ks + TILE * (d + 1);
    const int bh = blockIdx.y, b = bh / heads, h = bh % heads, kh = h / (heads / kv_heads);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, q0 = blockIdx.x * ROWS_PER_BLOCK;
    const long long q_stride = (long long)heads * d, k_stride = (long long)kv_heads * d;
    const T* qb = q + (long long)b * lq * q_stride + h * d;
    const T* kb = k + (long long)b * lk * k_stride + kh * d;
    const T* vb = v + (long long)b * lk * k_stride + kh * d;
    const int* seg = segments ? segments + (long long)b * lk : nullptr;

    load_tile(qs, d, qb, q_stride, q0, ROWS_PER_BLOCK, lq, d);
    float m[ROWS_PER_WARP], l[ROWS_PER_WARP], acc[ROWS_PER_WARP][VALUES_PER_LANE];
#pragma unroll
    for (int r = 0; r < ROWS_PER_WARP; r++) {
        m[r] = -FRUGAL_INFINITY; l[r] = 0.f;
#pragma unroll
        for (int e = 0; e < VALUES_PER_LANE; e++) acc[r][e] = 0.f;
    }
    const int key_limit = min(lk, q_offset + min(q0 + ROWS_PER_BLOCK, lq));
    for (int j0 = 0; j0 < key_limit; j0 += TILE) {
        __syncthreads();
        load_tile(ks, d + 1, kb, k_stride, j0, TILE, lk, d);
        load_tile(vs, d, vb, k_stride, j0, TILE, lk, d);
        __syncthreads();
        const int tile_keys = min(TILE, key_limit - j0);
#pragma unroll
        for (int r = 0; r < ROWS_PER_WARP; r++) {
            const int local = warp * ROWS_PER_WARP + r, i = q0 + local;
            if (i >= lq) continue;
            const int j = j0 + lane;
            const bool visible = attention_visible(i, j, lq, lk, q_offset, seg);
            float s = -FRUGAL_INFINITY;
            if (visible) {
                float dot = 0.f;
                for (int c = 0; c < d; c++) dot += qs[local * d + c] * ks[lane * (d + 1) + c];
                s = dot * scale;
            }
            const float tile_max = warp_max(s);
            if (tile_max == -FRUGAL_INFINITY) continue;
            const float m_new = fmaxf(m[r], tile_max);
            const float p = visible ? expf(s - m_new) : 0.f;
            const float alpha = expf(m[r] - m_new);
            l[r] = l[r] * alpha + warp_sum(p);
#pragma unroll
            for (int e = 0; e < VALUES_PER_LANE; e++) acc[r][e] *= alpha;
            for (int jj = 0; jj < tile_keys; jj++) {
                const float pj = __shfl_sync(0xffffffffu, p, jj);
                if (pj == 0.f) continue;
#pragma unroll
                for (int e = 0; e < VALUES_PER_LANE; e++) {
                    const int c = lane + 32 * e;
                    if (c < d) acc[r][e] += pj * vs[jj * d + c];
                }
            }
            m[r] = m_new;
        }
    }
#pragma unroll
    for (int r = 0; r < ROWS_PER_WARP; r++) {
        const int i = q0 + warp * ROWS_PER_WARP + r;
        if (i >= lq) continue;
        const float inverse = l[r] > 0.f ? 1.f / l[r] : 0.f;
        T* o = out + ((long long)b * lq + i) * q_stride + h * d;
#pragma unroll
        for (int e = 0; e < VALUES_PER_LANE; e++) {
            const int c = lane + 32 * e;
            if (c < d) o[c] = from_float<T>(acc[r][e] * inverse);
        }
        if (lane == 0) lse[(long long)bh * lq + i] = l[r] > 0.f ? m[r] + logf(l[r]) : -FRUGAL_INFINITY;
    }
}

// delta[bh, i] = Σ_c dout·out over one head of one query row (=): D of FlashAttention-2's
// backward. Grid ⌈batch·lq·heads / WARPS⌉, block 32·WARPS: one warp per (row, head).
template <typename T>
__device__ void attention_delta(float* delta, const float* dout, const T* out, int batch, int lq, int heads, int d) {
    const long long item = (long long)blockIdx.x * WARPS + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (item >= (long long)batch * lq * heads) return;
    const long long row = item / heads;  // b·lq + i
    const int h = item % heads;
    const long long at = row * heads * d + (long long)h * d;
    float sum = 0.f;
    for (int c = lane; c < d; c += 32) sum += dout[at + c] * to_float(out[at + c]);
    sum = warp_sum(sum);
    const int b = row / lq, i = row % lq;
    if (lane == 0) delta[((long long)b * heads + h) * lq + i] = sum;
}

// dq (=): dq_i = scale·Σ_j P_ij·(dP_ij − D_i)·k_j with P_ij = exp(scale·q_i·k_j − lse_i) and
// dP_ij = dout_i·v_j. Grid and block as the forward. Shared memory: 2·ROWS_PER_BLOCK·d (queries,
// their output gradients) + 2·TILE·(d+1) (keys, values) floats.
template <typename T>
__device__ void attention_backward_query(float* dq, const T* q, const T* k, const T* v, const float* dout, const float* lse,
                                         const float* delta, const int* segments, int lq, int lk, int q_offset,
                                         int heads, int kv_heads, int d, float scale) {
    extern __shared__ float shared[];
    float* qs = shared;
    float* gs = qs + ROWS_PER_BLOCK * d;
    float* ks = gs + ROWS_PER_BLOCK * d;
    float* vs = ks + TILE * (d + 1);
    const int bh = blockIdx.y, b = bh / heads, h = bh % heads, kh = h / (heads / kv_heads);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, q0 = blockIdx.x * ROWS_PER_BLOCK;
    const long long q_stride = (long long)heads * d, k_stride = (long long)kv_heads * d;
    const long long q_base = (long long)b * lq * q_stride + h * d;
    const T* kb = k + (long long)b * lk * k_stride + kh * d;
    const T* vb = v + (long long)b * lk * k_stride + kh * d;
    const int* seg = segments ? segments + (long long)b * lk : nullptr;

    load_tile(qs, d, q + q_base, q_stride, q0, ROWS_PER_BLOCK, lq, d);
    load_tile(gs, d, dout + q_base, q_stride, q0, ROWS_PER_BLOCK, lq, d);
    float row_lse[ROWS_PER_WARP], row_delta[ROWS_PER_WARP], acc[ROWS_PER_WARP][VALUES_PER_LANE];
#pragma unroll
    for (int r = 0; r < ROWS_PER_WARP; r++) {
        const int i = q0 + warp * ROWS_PER_WARP + r;
        row_lse[r] = i < lq ? lse[(long long)bh * lq + i] : -FRUGAL_INFINITY;
        row_delta[r] = i < lq ? delta[(long long)bh * lq + i] : 0.f;
#pragma unroll
        for (int e = 0; e < VALUES_PER_LANE; e++) acc[r][e] = 0.f;
    }
    const int key_limit = min(lk, q_offset + min(q0 + ROWS_PER_BLOCK, lq));
    for (int j0 = 0; j0 < key_limit; j0 += TILE) {
        __syncthreads();
        load_tile(ks, d + 1, kb, k_stride, j0, TILE, lk, d);
        load_tile(vs, d + 1, vb, k_stride, j0, TILE, lk, d);
        __syncthreads();
        const int tile_keys = min(TILE, key_limit - j0);
#pragma unroll
        for (int r = 0; r < ROWS_PER_WARP; r++) {
            const int local = warp * ROWS_PER_WARP + r, i = q0 + local;
            if (i >= lq || row_lse[r] == -FRUGAL_INFINITY) continue;
            const int j = j0 + lane;
            float ds = 0.f;
            if (attention_visible(i, j, lq, lk, q_offset, seg)) {
                float score = 0.f, dp = 0.f;
                for (int c = 0; c < d; c++) {
                    score += qs[local * d + c] * ks[lane * (d + 1) + c];
                    dp += gs[local * d + c] * vs[lane * (d + 1) + c];
                }
                const float p = expf(score * scale - row_lse[r]);
                ds = p * (dp - row_delta[r]) * scale;
            }
            for (int jj = 0; jj < tile_keys; jj++) {
                const float dsj = __shfl_sync(0xffffffffu, ds, jj);
                if (dsj == 0.f) continue;
#pragma unroll
                for (int e = 0; e < VALUES_PER_LANE; e++) {
                    const int c = lane + 32 * e;
                    if (c < d) acc[r][e] += dsj * ks[jj * (d + 1) + c];
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < ROWS_PER_WARP; r++) {
        const int i = q0 + warp * ROWS_PER_WARP + r;
        if (i >= lq) continue;
        float* g = dq + q_base + (long long)i * q_stride;
#pragma unroll
        for (int e = 0; e < VALUES_PER_LANE; e++) {
            const int c = lane + 32 * e;
            if (c < d) g[c] = acc[r][e];
        }
    }
}

// dk and dv (=): for each key j of one kv head, over the queries that see it in every query head
// of the group, dk_j = scale·Σ P_ij·(dP_ij − D_i)·q_i and dv_j = Σ P_ij·dout_i. Each block owns
// ROWS_PER_BLOCK keys, so no two blocks write the same row. Grid (⌈lk/ROWS_PER_BLOCK⌉,
// batch·kv_heads), block 32·WARPS. Shared memory: 2·ROWS_PER_BLOCK·d (keys, values) +
// 2·TILE·(d+1) (queries, output gradients) + 2·TILE (lse, delta) floats.
template <typename T>
__device__ void attention_backward_key(float* dk, float* dv, const T* q, const T* k, const T* v, const float* dout,
                                       const float* lse, const float* delta, const int* segments, int lq, int lk,
                                       int q_offset, int heads, int kv_heads, int d, float scale) {
    extern __shared__ float shared[];
    float* ks = shared;
    float* vs = ks + ROWS_PER_BLOCK * d;
    float* qs = vs + ROWS_PER_BLOCK * d;
    float* gs = qs + TILE * (d + 1);
    float* lses = gs + TILE * (d + 1);
    float* deltas = lses + TILE;
    const int bkh = blockIdx.y, b = bkh / kv_heads, kh = bkh % kv_heads, group = heads / kv_heads;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, k0 = blockIdx.x * ROWS_PER_BLOCK;
    const long long q_stride = (long long)heads * d, k_stride = (long long)kv_heads * d;
    const long long k_base = (long long)b * lk * k_stride + kh * d;
    const int* seg = segments ? segments + (long long)b * lk : nullptr;

    load_tile(ks, d, k + k_base, k_stride, k0, ROWS_PER_BLOCK, lk, d);
    load_tile(vs, d, v + k_base, k_stride, k0, ROWS_PER_BLOCK, lk, d);
    float acc_k[ROWS_PER_WARP][VALUES_PER_LANE], acc_v[ROWS_PER_WARP][VALUES_PER_LANE];
#pragma unroll
    for (int r = 0; r < ROWS_PER_WARP; r++)
#pragma unroll
        for (int e = 0; e < VALUES_PER_LANE; e++) { acc_k[r][e] = 0.f; acc_v[r][e] = 0.f; }
    const int first_query = max(0, k0 - q_offset);
    for (int h = kh * group; h < (kh + 1) * group; h++) {
        const long long q_base = (long long)b * lq * q_stride + h * d;
        const long long stat_base = ((long long)b * heads + h) * lq;
        for (int i0 = first_query; i0 < lq; i0 += TILE) {
            __syncthreads();
            load_tile(qs, d + 1, q + q_base, q_stride, i0, TILE, lq, d);
            load_tile(gs, d + 1, dout + q_base, q_stride, i0, TILE, lq, d);
            if (threadIdx.x < TILE) {
                const int i = i0 + threadIdx.x;
                lses[threadIdx.x] = i < lq ? lse[stat_base + i] : -FRUGAL_INFINITY;
                deltas[threadIdx.x] = i < lq ? delta[stat_base + i] : 0.f;
            }
            __syncthreads();
            const int tile_queries = min(TILE, lq - i0);
#pragma unroll
            for (int r = 0; r < ROWS_PER_WARP; r++) {
                const int local = warp * ROWS_PER_WARP + r, j = k0 + local;
                if (j >= lk) continue;
                const int i = i0 + lane;
                float p = 0.f, ds = 0.f;
                if (lses[lane] != -FRUGAL_INFINITY && attention_visible(i, j, lq, lk, q_offset, seg)) {
                    float score = 0.f, dp = 0.f;
                    for (int c = 0; c < d; c++) {
                        score += qs[lane * (d + 1) + c] * ks[local * d + c];
                        dp += gs[lane * (d + 1) + c] * vs[local * d + c];
                    }
                    p = expf(score * scale - lses[lane]);
                    ds = p * (dp - deltas[lane]) * scale;
                }
                for (int ii = 0; ii < tile_queries; ii++) {
                    const float pi = __shfl_sync(0xffffffffu, p, ii), dsi = __shfl_sync(0xffffffffu, ds, ii);
                    if (pi == 0.f && dsi == 0.f) continue;
#pragma unroll
                    for (int e = 0; e < VALUES_PER_LANE; e++) {
                        const int c = lane + 32 * e;
                        if (c < d) {
                            acc_k[r][e] += dsi * qs[ii * (d + 1) + c];
                            acc_v[r][e] += pi * gs[ii * (d + 1) + c];
                        }
                    }
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < ROWS_PER_WARP; r++) {
        const int j = k0 + warp * ROWS_PER_WARP + r;
        if (j >= lk) continue;
        float* gk = dk + k_base + (long long)j * k_stride;
        float* gv = dv + k_base + (long long)j * k_stride;
#pragma unroll
        for (int e = 0; e < VALUES_PER_LANE; e++) {
            const int c = lane + 32 * e;
            if (c < d) { gk[c] = acc_k[r][e]; gv[c] = acc_v[r][e]; }
        }
    }
}

#define ATTENTION(suffix, T)                                                                                      \
    extern "C" __global__ void __launch_bounds__(32 * WARPS) attention_forward_##suffix(                          \
        T* out, float* lse, const T* q, const T* k, const T* v, const int* segments, int batch, int lq,            \
        int lk, int q_offset, int heads, int kv_heads, int d, float scale) {                                     \
        attention_forward<T>(out, lse, q, k, v, segments, lq, lk, q_offset, heads, kv_heads, d, scale);         \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * WARPS) attention_delta_##suffix(                            \
        float* delta, const float* dout, const T* out, int batch, int lq, int heads, int d) {                     \
        attention_delta<T>(delta, dout, out, batch, lq, heads, d);                                               \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * WARPS) attention_backward_query_##suffix(                   \
        float* dq, const T* q, const T* k, const T* v, const float* dout, const float* lse, const float* delta,    \
        const int* segments, int batch, int lq, int lk, int q_offset, int heads, int kv_heads, int d,              \
        float scale) {                                                                                            \
        attention_backward_query<T>(dq, q, k, v, dout, lse, delta, segments, lq, lk, q_offset, heads, kv_heads,  \
                                    d, scale);                                                                    \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * WARPS) attention_backward_key_##suffix(                     \
        float* dk, float* dv, const T* q, const T* k, const T* v, const float* dout, const float* lse,             \
        const float* delta, const int* segments, int batch, int lq, int lk, int q_offset, int heads,              \
        int kv_heads, int d, float scale) {                                                                       \
        attention_backward_key<T>(dk, dv, q, k, v, dout, lse, delta, segments, lq, lk, q_offset, heads, kv_heads, \
                                  d, scale);                                                                      \
    }
FRUGAL_DTYPES(ATTENTION)
