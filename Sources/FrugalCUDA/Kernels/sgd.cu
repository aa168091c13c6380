// sgd.cu: one SGD step with momentum (PyTorch's rule): g += wd·p; b = μ·b + g; p −= lr·b.
#include "common.cuh"

// p (stored as T: f32, or f16/bf16 read widened and written rounded to nearest even) and b in
// place. Grid-stride over n.
#define SGD(suffix, T)                                                                                          \
    extern "C" __global__ void sgd_##suffix(T* p, float* b, const float* g, long long n, float learning_rate,   \
                                            float momentum, float weight_decay) {                               \
        FRUGAL_GRID_STRIDE(i, n) {                                                                              \
            const float pi = to_float(p[i]);                                                                    \
            const float step = g[i] + weight_decay * pi;                                                        \
            const float bi = momentum * b[i] + step;                                                            \
            b[i] = bi;                                                                                          \
            p[i] = from_float<T>(pi - learning_rate * bi);                                                      \
        }                                                                                                       \
    }
FRUGAL_DTYPES(SGD)
