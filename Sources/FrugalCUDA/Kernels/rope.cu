// rope.cu: rotary position embedding in place (rotate-half layout), and its backward (the
// inverse rotation: the same kernel with direction −1).
#include "common.cuh"

// Rotates each pair (v[i], v[i + half]) of every head of token t by direction·position·freq[i],
// in place (=). x: (tokens, heads, head_dim). Grid: one block per token.
template <typename T>
__device__ void rope(T* x, const int* positions, const float* inverse_frequencies, int heads, int head_dim, int half,
                     float direction) {
    const int t = blockIdx.x;
    const float p = (float)positions[t];
    for (int k = threadIdx.x; k < heads * half; k += blockDim.x) {
        const int h = k / half, i = k % half;
        float s, c;
        sincosf(p * inverse_frequencies[i], &s, &c);
        s *= direction;
        T* v = x + ((long long)t * heads + h) * head_dim;
        const float a = to_float(v[i]), b = to_float(v[i + half]);
        v[i] = from_float<T>(a * c - b * s);
        v[i + half] = from_float<T>(b * c + a * s);
    }
}

#define ROPE(suffix, T)                                                                                        \
    extern "C" __global__ void rope_##suffix(T* x, const int* positions, const float* inverse_frequencies,      \
                                             int tokens, int heads, int head_dim, int half, float direction) {  \
        rope<T>(x, positions, inverse_frequencies, heads, head_dim, half, direction);                          \
    }
FRUGAL_DTYPES(ROPE)
