// adamw.cu: one AdamW step over f32 master weights, in torch.optim.AdamW's order, optionally
// writing the updated weights rounded to a 16-bit compute copy in the same pass; or over a
// parameter stored in f32, f16 or bf16 itself (adamw_parameter_*, pure bf16's weights); one
// tensor at a time, or chunks of many in one launch (*_chunks_*):
//   p *= 1 − lr·wd; m += (1−β1)·(g − m); v = β2·v + (1−β2)·g²;
//   p −= step_size · m / (√v / correction2 + ε), step_size = lr/(1−β1^t), correction2 = √(1−β2^t)
#include "common.cuh"

// One value's step: m and v updated in place, the new parameter returned.
__device__ __forceinline__ float adamw_value(float p, float g, float* m, float* v, float beta1, float beta2, float epsilon,
                                             float decay, float step_size, float correction2) {
    const float mi = *m + (1.f - beta1) * (g - *m);
    const float vi = *v * beta2 + (1.f - beta2) * g * g;
    *m = mi; *v = vi;
    return p * decay - step_size * (mi / (sqrtf(vi) / correction2 + epsilon));
}

// p, m, v (in place); shadow (= p rounded to T, optional). Grid-stride over n.
#define ADAMW(suffix, T)                                                                                        \
    extern "C" __global__ void adamw_##suffix(float* p, float* m, float* v, T* shadow, const float* g, long long n, \
                                              float beta1, float beta2, float epsilon, float decay,              \
                                              float step_size, float correction2) {                             \
        FRUGAL_GRID_STRIDE(i, n) {                                                                              \
            const float pi = adamw_value(p[i], g[i], m + i, v + i, beta1, beta2, epsilon, decay, step_size, correction2); \
            p[i] = pi;                                                                                          \
            if (shadow) shadow[i] = from_float<T>(pi);                                                          \
        }                                                                                                       \
    }
FRUGAL_DTYPES(ADAMW)

// The same step on a parameter stored as T itself (pure bf16: no master): p read widened, the
// update computed in f32 as above, written back rounded to nearest even. Grid-stride over n.
#define ADAMW_PARAMETER(suffix, T)                                                                              \
    extern "C" __global__ void adamw_parameter_##suffix(T* p, float* m, float* v, const float* g, long long n,  \
                                                        float beta1, float beta2, float epsilon, float decay,  \
                                                        float step_size, float correction2) {                   \
        FRUGAL_GRID_STRIDE(i, n)                                                                                \
            p[i] = from_float<T>(adamw_value(to_float(p[i]), g[i], m + i, v + i, beta1, beta2, epsilon, decay,   \
                                             step_size, correction2));                                         \
    }
FRUGAL_DTYPES(ADAMW_PARAMETER)

// The same steps over chunks of several tensors, a block per chunk (one launch for a whole
// trainable set): chunk c's six words are p, m, v, shadow (or 0), g and its value count — the
// arguments of adamw_<T>, each pointer at the chunk's first value.
#define ADAMW_CHUNKS(suffix, T)                                                                                 \
    extern "C" __global__ void adamw_chunks_##suffix(const unsigned long long* chunks, float beta1, float beta2, \
                                                     float epsilon, float decay, float step_size,               \
                                                     float correction2) {                                       \
        const unsigned long long* c = chunks + 6 * (long long)blockIdx.x;                                      \
        float* p = (float*)c[0];                                                                                \
        float* m = (float*)c[1];                                                                                \
        float* v = (float*)c[2];                                                                                \
        T* shadow = (T*)c[3];                                                                                   \
        const float* g = (const float*)c[4];                                                                    \
        const long long n = (long long)c[5];                                                                    \
        for (long long i = threadIdx.x; i < n; i += blockDim.x) {                                               \
            const float pi = adamw_value(p[i], g[i], m + i, v + i, beta1, beta2, epsilon, decay, step_size, correction2); \
            p[i] = pi;                                                                                          \
            if (shadow) shadow[i] = from_float<T>(pi);                                                          \
        }                                                                                                       \
    }                                                                                                           \
    extern "C" __global__ void adamw_parameter_chunks_##suffix(const unsigned long long* chunks, float beta1,    \
                                                               float beta2, float epsilon, float decay,         \
                                                               float step_size, float correction2) {            \
        const unsigned long long* c = chunks + 6 * (long long)blockIdx.x;                                      \
        T* p = (T*)c[0];                                                                                        \
        float* m = (float*)c[1];                                                                                \
        float* v = (float*)c[2];                                                                                \
        const float* g = (const float*)c[4];                                                                    \
        const long long n = (long long)c[5];                                                                    \
        for (long long i = threadIdx.x; i < n; i += blockDim.x)                                                 \
            p[i] = from_float<T>(adamw_value(to_float(p[i]), g[i], m + i, v + i, beta1, beta2, epsilon, decay,   \
                                             step_size, correction2));                                         \
    }
FRUGAL_DTYPES(ADAMW_CHUNKS)
