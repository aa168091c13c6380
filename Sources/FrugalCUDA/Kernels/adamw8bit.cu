// adamw8bit.cu: one AdamW step with blockwise dynamic 8-bit moments — bitsandbytes' 8-bit blockwise
// Adam's storage around adamw.cu's arithmetic. A quantization block of 256 values is
// { f32 absmax; u8 codes[256] } (260 bytes): value t is map[codes[t]]·absmax, with bitsandbytes'
// signed dynamic map for m and its unsigned one for v. Per block: decode m and v, update p, m, v
// as adamw.cu does, then encode the new m and v with the block's new absmax, each as the map
// entry nearest to value/absmax (the lower of two equally near; a nonzero value never as 0, so
// that v cannot decode to 0 under a nonzero m), found by binary search.
#include "common.cuh"

// The code of the entry of `map` (256 sorted values) nearest to x, the lower of two equally near;
// a nonzero x never takes the code of 0 but its neighbour on x's side (DynamicQuantization.encode).
__device__ __forceinline__ unsigned char dynamic8_encode(float x, const float* map) {
    if (x <= map[0]) return 0;
    if (x >= map[255]) return 255;
    int low = 0, high = 255;  // map[low] <= x < map[high]
    while (high - low > 1) {
        const int middle = (low + high) / 2;
        if (map[middle] <= x) low = middle; else high = middle;
    }
    if (map[low] == 0.f && x != 0.f) return (unsigned char)high;
    if (map[high] == 0.f) return (unsigned char)low;
    return (unsigned char)(map[high] - x < x - map[low] ? high : low);
}

// p (in place, n values, stored as T: f32, or f16/bf16 read widened and written rounded to
// nearest even); m, v (in place, one 260-byte block per 256 values, padding encodes 0);
// maps: the 256 signed then the 256 unsigned map entries. Thread blocks of 256 stride over the
// quantization blocks (a few per multiprocessor, each loading the maps into shared memory once:
// a thread block per quantization block spent more on starting blocks and loading maps than on
// the update); thread t on value 256·block + t.
#define ADAMW8BIT(suffix, T)                                                                                    \
    extern "C" __global__ void adamw8bit_##suffix(T* p, unsigned char* m, unsigned char* v, const float* g,     \
                                                  const float* maps, long long n, float beta1, float beta2,     \
                                                  float epsilon, float decay, float step_size,                  \
                                                  float correction2) {                                          \
        __shared__ float signed_map[256], unsigned_map[256];                                                    \
        const int t = threadIdx.x;                                                                              \
        signed_map[t] = maps[t];                                                                                \
        unsigned_map[t] = maps[256 + t];                                                                        \
        __syncthreads();                                                                                        \
        for (long long b = blockIdx.x; b < (n + 255) / 256; b += gridDim.x) {                                   \
            unsigned char* m_block = m + b * 260;                                                               \
            unsigned char* v_block = v + b * 260;                                                               \
            const long long i = b * 256 + t;                                                                    \
            float mi = 0.f, vi = 0.f;                                                                           \
            if (i < n) {                                                                                        \
                const float gi = g[i];                                                                          \
                mi = signed_map[m_block[4 + t]] * *(const float*)m_block;                                       \
                vi = unsigned_map[v_block[4 + t]] * *(const float*)v_block;                                     \
                mi = mi + (1.f - beta1) * (gi - mi);                                                            \
                vi = vi * beta2 + (1.f - beta2) * gi * gi;                                                      \
                p[i] = from_float<T>(to_float(p[i]) * decay - step_size * (mi / (sqrtf(vi) / correction2 + epsilon))); \
            }                                                                                                   \
            /* block_max synchronizes first, so every thread has read the old absmax before it changes. */     \
            const float m_max = block_max(fabsf(mi)), v_max = block_max(vi);                                    \
            m_block[4 + t] = dynamic8_encode(m_max > 0.f ? mi / m_max : 0.f, signed_map);                       \
            v_block[4 + t] = dynamic8_encode(v_max > 0.f ? vi / v_max : 0.f, unsigned_map);                     \
            if (t == 0) {                                                                                       \
                *(float*)m_block = m_max;                                                                       \
                *(float*)v_block = v_max;                                                                       \
            }                                                                                                   \
        }                                                                                                       \
    }
FRUGAL_DTYPES(ADAMW8BIT)
