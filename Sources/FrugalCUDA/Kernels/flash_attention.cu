// flash_attention.cu: causal grouped-query attention on the tensor cores for 16-bit activations
// and head dimensions 64, 96 (Phi-3) and 128, in the FlashAttention-2 manner: a block's 64 queries (16 per
// warp) visit the keys a 64-key tile at a time with an online softmax; the scores live in
// registers as mma fragments (tensor_core.cuh) and never reach memory; each query row's
// log-sum-exp is saved for the backward.
//
// Layouts and visibility are attention.cu's: q, out (batch·lq, heads·D), k, v (batch·lk,
// kv_heads·D), all T; lse (batch·heads, lq) f32; query i sits at key position q_offset + i and sees
// keys j ≤ q_offset + i of its own segment. Scores are scale·q·k, summed in f32; the
// probabilities are rounded to T for their product with v, as FlashAttention does.
#include "tensor_core.cuh"

#define FA_WARPS 4
#define FA_ROWS (16 * FA_WARPS)  // queries per block
#define FA_TILE 64               // keys per tile

__device__ __forceinline__ bool flash_visible(int i, int j, int lq, int lk, int q_offset, const int* segments) {
    if (i >= lq || j >= lk || j > q_offset + i) return false;
    return !segments || segments[j] == segments[q_offset + i];
}

// Shared row pitch in values: 8 more than D, so the rows a warp reads fall on different banks.
template <int D> __device__ __forceinline__ constexpr int flash_pitch() { return D + 8; }

// Copies keys [first, first + FA_TILE) of one head of a (rows, stride) matrix into shared memory
// a pair of values at a time, zeros past `limit`.
template <typename T, int D>
__device__ __forceinline__ void flash_load_tile(T* tile, const T* source, long long stride, int first, int limit) {
    for (int idx = threadIdx.x; idx < FA_TILE * D / 2; idx += blockDim.x) {
        const int r = idx / (D / 2), c = idx % (D / 2) * 2, row = first + r;
        *(unsigned*)(tile + r * flash_pitch<D>() + c) = row < limit ? load_pair(source + (long long)row * stride + c) : 0u;
    }
}

// Rows [first, first + FA_TILE) of a (rows, stride) f32 matrix's head, rounded to T into shared memory.
template <typename T, int D>
__device__ __forceinline__ void flash_load_rounded(T* tile, const float* source, long long stride, int first, int limit) {
    for (int idx = threadIdx.x; idx < FA_TILE * D / 2; idx += blockDim.x) {
        const int r = idx / (D / 2), c = idx % (D / 2) * 2, row = first + r;
        const float* x = source + (long long)row * stride + c;
        *(unsigned*)(tile + r * flash_pitch<D>() + c) = row < limit ? pack_pair<T>(x[0], x[1]) : 0u;
    }
}

// 16 rows × 64 columns of products a·bᵀ where a's rows are A fragments (`af`, D/16 of them) and
// b's 64 rows sit in shared memory (`tile`, pitch D + 8): acc[n] holds columns n·8 … n·8 + 7.
template <typename T, int D>
__device__ __forceinline__ void flash_products(float (*acc)[4], const unsigned (*af)[4], const T* tile, int g, int t) {
#pragma unroll
    for (int n = 0; n < FA_TILE / 8; n++) {
#pragma unroll
        for (int e = 0; e < 4; e++) acc[n][e] = 0.f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            const T* row = tile + (n * 8 + g) * flash_pitch<D>() + kk * 16 + 2 * t;
            const unsigned bf[2] = {load_pair(row), load_pair(row + 8)};
            mma_16816<T>(acc[n], af[kk], bf);
        }
    }
}

// The same products with a's 16 rows in shared memory too (rows `first` … `first` + 15 of `rows_a`),
// their fragments loaded 16 dimensions at a time instead of held in registers.
template <typename T, int D>
__device__ __forceinline__ void flash_products_shared(float (*acc)[4], const T* rows_a, int first, const T* tile, int g, int t) {
#pragma unroll
    for (int n = 0; n < FA_TILE / 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[n][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        const T* a = rows_a + (first + g) * flash_pitch<D>() + kk * 16 + 2 * t;
        const T* below = a + 8 * flash_pitch<D>();  // row g + 8
        const unsigned af[4] = {load_pair(a), load_pair(below), load_pair(a + 8), load_pair(below + 8)};
#pragma unroll
        for (int n = 0; n < FA_TILE / 8; n++) {
            const T* row = tile + (n * 8 + g) * flash_pitch<D>() + kk * 16 + 2 * t;
            const unsigned bf[2] = {load_pair(row), load_pair(row + 8)};
            mma_16816<T>(acc[n], af, bf);
        }
    }
}

// out (+=) x·tile, x the 16 × 64 values of `x` (accumulator layout, rounded to T as A fragments)
// and tile the 64 × D values in shared memory: out[n] holds columns n·8 … n·8 + 7.
template <typename T, int D>
__device__ __forceinline__ void flash_accumulate(float (*out)[4], const float (*x)[4], const T* tile, int g, int t) {
#pragma unroll
    for (int kk = 0; kk < FA_TILE / 16; kk++) {
        const unsigned xf[4] = {pack_pair<T>(x[2 * kk][0], x[2 * kk][1]), pack_pair<T>(x[2 * kk][2], x[2 * kk][3]),
                                pack_pair<T>(x[2 * kk + 1][0], x[2 * kk + 1][1]), pack_pair<T>(x[2 * kk + 1][2], x[2 * kk + 1][3])};
        const T* rows = tile + (kk * 16 + 2 * t) * flash_pitch<D>() + g;
#pragma unroll
        for (int n = 0; n < D / 8; n++) {
            const T* column = rows + n * 8;
            const unsigned bf[2] = {gather_pair(column, column + flash_pitch<D>()),
                                    gather_pair(column + 8 * flash_pitch<D>(), column + 9 * flash_pitch<D>())};
            mma_16816<T>(out[n], xf, bf);
        }
    }
}

// A fragments of 16 rows (`rows[0]` = row g, `rows[1]` = row g + 8) of a head of a (rows, stride)
// matrix in T, zero at or past `limit`.
template <typename T, int D>
__device__ __forceinline__ void flash_fragments(unsigned (*af)[4], const T* source, long long stride, const int* rows, int limit, int t) {
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
#pragma unroll
        for (int r = 0; r < 4; r++) {
            const int i = rows[r & 1], c = kk * 16 + 2 * t + 8 * (r >> 1);
            af[kk][r] = i < limit ? load_pair(source + (long long)i * stride + c) : 0u;
        }
}

// One block's 64 queries of one (sequence, head), as the forward and dq kernels see them: the
// indices, the lane's two rows (g and g + 8 of its warp's 16), the strides, the keys, values
// and segments of the sequence's kv head, and the shared tiles they pass through.
template <typename T, int D> struct FlashQueryBlock {
    int bh, b, h, g, t, q0, rows[2];
    long long q_stride, k_stride;
    const T* keys;
    const T* values;
    const int* segments;
    T* key_tile;
    T* value_tile;

    __device__ FlashQueryBlock(T* shared, const T* k, const T* v, const int* segment_ids, int lk, int heads, int kv_heads) {
        key_tile = shared;
        value_tile = shared + FA_TILE * flash_pitch<D>();
        bh = blockIdx.y; b = bh / heads; h = bh % heads;
        const int kh = h / (heads / kv_heads), warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
        g = lane >> 2; t = lane & 3; q0 = blockIdx.x * FA_ROWS;
        rows[0] = q0 + warp * 16 + g; rows[1] = rows[0] + 8;
        q_stride = (long long)heads * D; k_stride = (long long)kv_heads * D;
        keys = k + (long long)b * lk * k_stride + kh * D;
        values = v + (long long)b * lk * k_stride + kh * D;
        segments = segment_ids ? segment_ids + (long long)b * lk : nullptr;
    }

    // Key tile j0 and its values into shared memory, after the block is done with the last ones.
    __device__ __forceinline__ void load_tile(int j0, int lk) const {
        __syncthreads();
        flash_load_tile<T, D>(key_tile, keys, k_stride, j0, lk);
        flash_load_tile<T, D>(value_tile, values, k_stride, j0, lk);
        __syncthreads();
    }
};

// The forward: out (=), lse (=). Grid (⌈lq / 64⌉, batch·heads), block 128; shared memory
// 2·64·(D + 8) values of T (a key tile and a value tile).
template <typename T, int D>
__device__ void flash_attention_forward(T* out, float* lse, const T* q, const T* k, const T* v, const int* segments, int lq,
                                        int lk, int q_offset, int heads, int kv_heads, float scale) {
    FRUGAL_DYNAMIC_SHARED(T, shared);
    const FlashQueryBlock<T, D> blk(shared, k, v, segments, lk, heads, kv_heads);
    const int g = blk.g, t = blk.t, *rows = blk.rows;
    const T* qb = q + (long long)blk.b * lq * blk.q_stride + blk.h * D;

    // The warp's 16 queries as A fragments, 16 dimensions each (zero past the last query).
    unsigned qf[D / 16][4];
    flash_fragments<T, D>(qf, qb, blk.q_stride, rows, lq, t);
    float o[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) o[n][e] = 0.f;
    float m[2] = {-FRUGAL_INFINITY, -FRUGAL_INFINITY}, l[2] = {0.f, 0.f};

    const int key_limit = min(lk, q_offset + min(blk.q0 + FA_ROWS, lq));
    for (int j0 = 0; j0 < key_limit; j0 += FA_TILE) {
        blk.load_tile(j0, lk);
        // S = Q·Kᵀ: 16 queries × 64 keys, eight 16 × 8 fragments.
        float s[FA_TILE / 8][4];
        flash_products<T, D>(s, qf, blk.key_tile, g, t);
        // Mask and scale; each row's maximum over the four lanes that hold it.
        float tile_max[2] = {-FRUGAL_INFINITY, -FRUGAL_INFINITY};
#pragma unroll
        for (int n = 0; n < FA_TILE / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int j = j0 + n * 8 + 2 * t + (e & 1);
                s[n][e] = flash_visible(rows[e >> 1], j, lq, lk, q_offset, blk.segments) ? s[n][e] * scale : -FRUGAL_INFINITY;
                tile_max[e >> 1] = fmaxf(tile_max[e >> 1], s[n][e]);
            }
        float alpha[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
            tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
            const float m_new = fmaxf(m[r], tile_max[r]);
            alpha[r] = m_new == -FRUGAL_INFINITY ? 1.f : expf(m[r] - m_new);
            m[r] = m_new;
            l[r] *= alpha[r];
        }
        // P = exp(S − m), this lane's share of each row's sum, O rescaled.
#pragma unroll
        for (int n = 0; n < FA_TILE / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float p = s[n][e] == -FRUGAL_INFINITY ? 0.f : expf(s[n][e] - m[e >> 1]);
                s[n][e] = p;
                l[e >> 1] += p;
            }
#pragma unroll
        for (int n = 0; n < D / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) o[n][e] *= alpha[e >> 1];
        // O += P·V: P's accumulators become A fragments 16 keys at a time.
        flash_accumulate<T, D>(o, s, blk.value_tile, g, t);
    }
    // Each row's sum over its four lanes; out = O / l; lse = m + log l.
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int i = rows[r];
        if (i >= lq) continue;
        const float inverse = l[r] > 0.f ? 1.f / l[r] : 0.f;
        T* row = out + ((long long)blk.b * lq + i) * blk.q_stride + blk.h * D;
#pragma unroll
        for (int n = 0; n < D / 8; n++) {
            const int c = n * 8 + 2 * t;
            row[c] = from_float<T>(o[n][2 * r] * inverse);
            row[c + 1] = from_float<T>(o[n][2 * r + 1] * inverse);
        }
        if (t == 0) lse[(long long)blk.bh * lq + i] = l[r] > 0.f ? m[r] + logf(l[r]) : -FRUGAL_INFINITY;
    }
}

// dq (=): per query row, dq = scale·Σ_j P_ij·(dP_ij − delta_i)·k_j with P = exp(scale·q·k − lse) and
// dP = dOut·v, recomputed a 64-key tile at a time. Grid (⌈lq / 64⌉, batch·heads), block 128;
// shared memory 2·64·(D + 8) values of T.
template <typename T, int D>
__device__ void flash_attention_backward_query(float* dq, const T* q, const T* k, const T* v, const float* dout, const float* lse,
                                               const float* delta, const int* segments, int lq, int lk, int q_offset, int heads,
                                               int kv_heads, float scale) {
    FRUGAL_DYNAMIC_SHARED(T, shared);
    const FlashQueryBlock<T, D> blk(shared, k, v, segments, lk, heads, kv_heads);
    const int g = blk.g, t = blk.t, *rows = blk.rows;
    const long long q_stride = blk.q_stride, head = (long long)blk.b * lq * q_stride + blk.h * D;
    unsigned qf[D / 16][4], gf[D / 16][4];
    flash_fragments<T, D>(qf, q + head, q_stride, rows, lq, t);
    // dOut's rows rounded to T, as the forward's output was.
    const float* ob = dout + head;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
#pragma unroll
        for (int r = 0; r < 4; r++) {
            const int i = rows[r & 1], c = kk * 16 + 2 * t + 8 * (r >> 1);
            gf[kk][r] = i < lq ? pack_pair<T>(ob[(long long)i * q_stride + c], ob[(long long)i * q_stride + c + 1]) : 0u;
        }
    float row_lse[2], row_delta[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        row_lse[r] = rows[r] < lq ? lse[(long long)blk.bh * lq + rows[r]] : 0.f;
        row_delta[r] = rows[r] < lq ? delta[(long long)blk.bh * lq + rows[r]] : 0.f;
    }
    float acc[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[n][e] = 0.f;
    const int key_limit = min(lk, q_offset + min(blk.q0 + FA_ROWS, lq));
    for (int j0 = 0; j0 < key_limit; j0 += FA_TILE) {
        blk.load_tile(j0, lk);
        float s[FA_TILE / 8][4], dp[FA_TILE / 8][4];
        flash_products<T, D>(s, qf, blk.key_tile, g, t);
        flash_products<T, D>(dp, gf, blk.value_tile, g, t);
        // dS = P·(dP − delta), in place of S.
#pragma unroll
        for (int n = 0; n < FA_TILE / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int r = e >> 1, j = j0 + n * 8 + 2 * t + (e & 1);
                const float p = flash_visible(rows[r], j, lq, lk, q_offset, blk.segments) && row_lse[r] > -FRUGAL_INFINITY
                    ? expf(s[n][e] * scale - row_lse[r]) : 0.f;
                s[n][e] = p * (dp[n][e] - row_delta[r]);
            }
        flash_accumulate<T, D>(acc, s, blk.key_tile, g, t);
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (rows[r] >= lq) continue;
        float* row = dq + ((long long)blk.b * lq + rows[r]) * q_stride + blk.h * D;
#pragma unroll
        for (int n = 0; n < D / 8; n++) {
            row[n * 8 + 2 * t] = acc[n][2 * r] * scale;
            row[n * 8 + 2 * t + 1] = acc[n][2 * r + 1] * scale;
        }
    }
}

// dk, dv (=): per key of a kv head, over every query head of its group and every query that sees
// it: dv = Σ_i P_ij·dOut_i, dk = scale·Σ_i P_ij·(dP_ij − delta_i)·q_i, a 64-query tile at a time.
// Grid (⌈lk / 64⌉, batch·kv_heads), block 128 (16 keys a warp); shared memory 4·64·(D + 8) values
// of T (the block's keys and values, a query tile and its output gradients) and 2·64 floats (the
// tile's lse and delta).
template <typename T, int D>
__device__ void flash_attention_backward_key(float* dk, float* dv, const T* q, const T* k, const T* v, const float* dout,
                                             const float* lse, const float* delta, const int* segments, int lq, int lk, int q_offset,
                                             int heads, int kv_heads, float scale) {
    FRUGAL_DYNAMIC_SHARED(T, shared);
    T* keys = shared;
    T* values = keys + FA_TILE * flash_pitch<D>();
    T* queries = values + FA_TILE * flash_pitch<D>();
    T* gradients = queries + FA_TILE * flash_pitch<D>();
    float* tile_lse = (float*)(gradients + FA_TILE * flash_pitch<D>());
    float* tile_delta = tile_lse + FA_TILE;
    const int bk = blockIdx.y, b = bk / kv_heads, kh = bk % kv_heads, group = heads / kv_heads;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int k0 = blockIdx.x * FA_ROWS, local = warp * 16, key_rows[2] = {k0 + local + g, k0 + local + g + 8};
    const long long q_stride = (long long)heads * D, k_stride = (long long)kv_heads * D;
    const int* seg = segments ? segments + (long long)b * lk : nullptr;
    flash_load_tile<T, D>(keys, k + (long long)b * lk * k_stride + kh * D, k_stride, k0, lk);
    flash_load_tile<T, D>(values, v + (long long)b * lk * k_stride + kh * D, k_stride, k0, lk);
    float dk_acc[D / 8][4], dv_acc[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) dk_acc[n][e] = dv_acc[n][e] = 0.f;
    const int first_query = max(0, k0 - q_offset) / FA_TILE * FA_TILE;
    for (int h = kh * group; h < (kh + 1) * group; h++) {
        const int bh = b * heads + h;
        const T* qb = q + (long long)b * lq * q_stride + h * D;
        const float* ob = dout + (long long)b * lq * q_stride + h * D;
        for (int i0 = first_query; i0 < lq; i0 += FA_TILE) {
            __syncthreads();
            flash_load_tile<T, D>(queries, qb, q_stride, i0, lq);
            flash_load_rounded<T, D>(gradients, ob, q_stride, i0, lq);
            for (int idx = threadIdx.x; idx < FA_TILE; idx += blockDim.x) {
                const int i = i0 + idx;
                tile_lse[idx] = i < lq ? lse[(long long)bh * lq + i] : -FRUGAL_INFINITY;
                tile_delta[idx] = i < lq ? delta[(long long)bh * lq + i] : 0.f;
            }
            __syncthreads();
            // Sᵀ = K·Qᵀ and dPᵀ = V·dOutᵀ: the warp's 16 keys × the tile's 64 queries.
            float s[FA_TILE / 8][4], dp[FA_TILE / 8][4];
            flash_products_shared<T, D>(s, keys, local, queries, g, t);
            flash_products_shared<T, D>(dp, values, local, gradients, g, t);
#pragma unroll
            for (int n = 0; n < FA_TILE / 8; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int column = n * 8 + 2 * t + (e & 1), i = i0 + column;
                    const float m = tile_lse[column];
                    const float p = flash_visible(i, key_rows[e >> 1], lq, lk, q_offset, seg) && m > -FRUGAL_INFINITY
                        ? expf(s[n][e] * scale - m) : 0.f;
                    s[n][e] = p;                                    // Pᵀ
                    dp[n][e] = p * (dp[n][e] - tile_delta[column]);  // dSᵀ
                }
            flash_accumulate<T, D>(dv_acc, s, gradients, g, t);
            flash_accumulate<T, D>(dk_acc, dp, queries, g, t);
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (key_rows[r] >= lk) continue;
        const long long at = ((long long)b * lk + key_rows[r]) * k_stride + kh * D;
#pragma unroll
        for (int n = 0; n < D / 8; n++) {
            const int c = n * 8 + 2 * t;
            dk[at + c] = dk_acc[n][2 * r] * scale;
            dk[at + c + 1] = dk_acc[n][2 * r + 1] * scale;
            dv[at + c] = dv_acc[n][2 * r];
            dv[at + c + 1] = dv_acc[n][2 * r + 1];
        }
    }
}

// flash_attention_forward_<T>_d<D>, flash_attention_backward_query_<T>_d<D>, flash_attention_backward_key_<T>_d<D>
#define FLASH_ATTENTION(suffix, T, D)                                                                                     \
    extern "C" __global__ void __launch_bounds__(128) flash_attention_forward_##suffix##_d##D(                            \
        T* out, float* lse, const T* q, const T* k, const T* v, const int* segments, int lq, int lk, int q_offset,         \
        int heads, int kv_heads, float scale) {                                                                            \
        flash_attention_forward<T, D>(out, lse, q, k, v, segments, lq, lk, q_offset, heads, kv_heads, scale);              \
    }                                                                                                                      \
    extern "C" __global__ void __launch_bounds__(128) flash_attention_backward_query_##suffix##_d##D(                     \
        float* dq, const T* q, const T* k, const T* v, const float* dout, const float* lse, const float* delta,            \
        const int* segments, int lq, int lk, int q_offset, int heads, int kv_heads, float scale) {                         \
        flash_attention_backward_query<T, D>(dq, q, k, v, dout, lse, delta, segments, lq, lk, q_offset, heads, kv_heads,    \
                                             scale);                                                                       \
    }                                                                                                                      \
    extern "C" __global__ void __launch_bounds__(128) flash_attention_backward_key_##suffix##_d##D(                       \
        float* dk, float* dv, const T* q, const T* k, const T* v, const float* dout, const float* lse, const float* delta,  \
        const int* segments, int lq, int lk, int q_offset, int heads, int kv_heads, float scale) {                         \
        flash_attention_backward_key<T, D>(dk, dv, q, k, v, dout, lse, delta, segments, lq, lk, q_offset, heads, kv_heads,  \
                                           scale);                                                                         \
    }
FLASH_ATTENTION(f16, __half, 64)
FLASH_ATTENTION(f16, __half, 96)
FLASH_ATTENTION(f16, __half, 128)
FLASH_ATTENTION(bf16, __nv_bfloat16, 64)
FLASH_ATTENTION(bf16, __nv_bfloat16, 96)
FLASH_ATTENTION(bf16, __nv_bfloat16, 128)
