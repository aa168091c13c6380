// sgd.cu: one SGD step with momentum (PyTorch's rule): g += wd·p; b = μ·b + g; p −= lr·b.
#include "common.cuh"

// p and b in place. Grid-stride over n.
extern "C" __global__ void sgd(float* p, float* b, const float* g, long long n, float learning_rate, float momentum,
                               float weight_decay) {
    FRUGAL_GRID_STRIDE(i, n) {
        const float step = g[i] + weight_decay * p[i];
        const float bi = momentum * b[i] + step;
        b[i] = bi;
        p[i] -= learning_rate * bi;
    }
}
