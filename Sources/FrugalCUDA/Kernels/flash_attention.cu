// flash_attention.cu: causal grouped-query attention on the tensor cores for 16-bit activations
// and head dimensions 64 and 128, in the FlashAttention-2 manner: a block's 64 queries (16 per
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

// The forward: out (=), lse (=). Grid (⌈lq / 64⌉, batch·heads), block 128; shared memory
// 2·64·(D + 8) values of T (a key tile and a value tile).
template <typename T, int D>
__device__ void flash_attention_forward(T* out, float* lse, const T* q, const T* k, const T* v, const int* segments, int lq,
                                        int lk, int q_offset, int heads, int kv_heads, float scale) {
    FRUGAL_DYNAMIC_SHARED(T, shared);
    T* keys = shared;
    T* values = shared + FA_TILE * flash_pitch<D>();
    const int bh = blockIdx.y, b = bh / heads, h = bh % heads, kh = h / (heads / kv_heads);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int q0 = blockIdx.x * FA_ROWS, rows[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
    const long long q_stride = (long long)heads * D, k_stride = (long long)kv_heads * D;
    const T* qb = q + (long long)b * lq * q_stride + h * D;
    const T* kb = k + (long long)b * lk * k_stride + kh * D;
    const T* vb = v + (long long)b * lk * k_stride + kh * D;
    const int* seg = segments ? segments + (long long)b * lk : nullptr;

    // The warp's 16 queries as A fragments, 16 dimensions each (zero past the last query).
    unsigned qf[D / 16][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
#pragma unroll
        for (int r = 0; r < 4; r++) {
            const int i = rows[r & 1], c = kk * 16 + 2 * t + 8 * (r >> 1);
            qf[kk][r] = i < lq ? load_pair(qb + (long long)i * q_stride + c) : 0u;
        }
    float o[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) o[n][e] = 0.f;
    float m[2] = {-FRUGAL_INFINITY, -FRUGAL_INFINITY}, l[2] = {0.f, 0.f};

    const int key_limit = min(lk, q_offset + min(q0 + FA_ROWS, lq));
    for (int j0 = 0; j0 < key_limit; j0 += FA_TILE) {
        __syncthreads();
        flash_load_tile<T, D>(keys, kb, k_stride, j0, lk);
        flash_load_tile<T, D>(values, vb, k_stride, j0, lk);
        __syncthreads();
        // S = Q·Kᵀ: 16 queries × 64 keys, eight 16 × 8 fragments.
        float s[FA_TILE / 8][4];
#pragma unroll
        for (int n = 0; n < FA_TILE / 8; n++) {
#pragma unroll
            for (int e = 0; e < 4; e++) s[n][e] = 0.f;
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++) {
                const T* key = keys + (n * 8 + g) * flash_pitch<D>() + kk * 16 + 2 * t;
                const unsigned bf[2] = {load_pair(key), load_pair(key + 8)};
                mma_16816<T>(s[n], qf[kk], bf);
            }
        }
        // Mask and scale; each row's maximum over the four lanes that hold it.
        float tile_max[2] = {-FRUGAL_INFINITY, -FRUGAL_INFINITY};
#pragma unroll
        for (int n = 0; n < FA_TILE / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int j = j0 + n * 8 + 2 * t + (e & 1);
                s[n][e] = flash_visible(rows[e >> 1], j, lq, lk, q_offset, seg) ? s[n][e] * scale : -FRUGAL_INFINITY;
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
#pragma unroll
        for (int kk = 0; kk < FA_TILE / 16; kk++) {
            const unsigned pf[4] = {pack_pair<T>(s[2 * kk][0], s[2 * kk][1]), pack_pair<T>(s[2 * kk][2], s[2 * kk][3]),
                                    pack_pair<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                    pack_pair<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
            const T* value = values + (kk * 16 + 2 * t) * flash_pitch<D>() + g;
#pragma unroll
            for (int n = 0; n < D / 8; n++) {
                const T* column = value + n * 8;
                const unsigned bf[2] = {gather_pair(column, column + flash_pitch<D>()),
                                        gather_pair(column + 8 * flash_pitch<D>(), column + 9 * flash_pitch<D>())};
                mma_16816<T>(o[n], pf, bf);
            }
        }
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
        T* row = out + ((long long)b * lq + i) * q_stride + h * D;
#pragma unroll
        for (int n = 0; n < D / 8; n++) {
            const int c = n * 8 + 2 * t;
            row[c] = from_float<T>(o[n][2 * r] * inverse);
            row[c + 1] = from_float<T>(o[n][2 * r + 1] * inverse);
        }
        if (t == 0) lse[(long long)bh * lq + i] = l[r] > 0.f ? m[r] + logf(l[r]) : -FRUGAL_INFINITY;
    }
}

// flash_attention_forward_<T>_d<D>
#define FLASH_ATTENTION(suffix, T, D)                                                                                     \
    extern "C" __global__ void __launch_bounds__(128) flash_attention_forward_##suffix##_d##D(                            \
        T* out, float* lse, const T* q, const T* k, const T* v, const int* segments, int lq, int lk, int q_offset,         \
        int heads, int kv_heads, float scale) {                                                                            \
        flash_attention_forward<T, D>(out, lse, q, k, v, segments, lq, lk, q_offset, heads, kv_heads, scale);              \
    }
FLASH_ATTENTION(f16, __half, 64)
FLASH_ATTENTION(f16, __half, 128)
FLASH_ATTENTION(bf16, __nv_bfloat16, 64)
FLASH_ATTENTION(bf16, __nv_bfloat16, 128)
