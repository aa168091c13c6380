// layernorm.cu: LayerNorm over the last dimension, fused with the residual add, and its backward.
//   h = x (+ residual);  out = (h − μ) · rstd · w + b,  rstd = 1/√(var(h) + eps) (biased variance)
#include "common.cuh"

// out (=), residual_out (= h, optional), mean and rstd (= per row, optional). bias may be null.
// Grid: one block per row. residual_out may alias x or residual; out may alias x.
template <typename W>
__device__ void layernorm_forward(float* out, float* residual_out, float* mean_out, float* rstd_out, const float* x,
                                  const float* residual, const W* weight, const W* bias, int n, float eps) {
    const long long base = (long long)blockIdx.x * n;
    const float* h = residual_out ? residual_out : x;
    float sum = 0.f;
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        float value = x[base + c];
        if (residual) value += residual[base + c];
        if (residual_out) residual_out[base + c] = value;
        sum += value;
    }
    const float mean = block_sum(sum) / n;
    float squares = 0.f;
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        const float value = h[base + c] + (residual && !residual_out ? residual[base + c] : 0.f);
        squares += (value - mean) * (value - mean);
    }
    const float s = rsqrtf(block_sum(squares) / n + eps);
    if (threadIdx.x == 0) {
        if (mean_out) mean_out[blockIdx.x] = mean;
        if (rstd_out) rstd_out[blockIdx.x] = s;
    }
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        const float value = h[base + c] + (residual && !residual_out ? residual[base + c] : 0.f);
        out[base + c] = (value - mean) * s * to_float(weight[c]) + (bias ? to_float(bias[c]) : 0.f);
    }
}

#define LAYERNORM_FORWARD(suffix, W)                                                                           \
    extern "C" __global__ void layernorm_forward_##suffix(float* out, float* residual_out, float* mean,         \
                                                          float* rstd, const float* x, const float* residual,  \
                                                          const W* weight, const W* bias, int rows, int n,     \
                                                          float eps) {                                         \
        layernorm_forward<W>(out, residual_out, mean, rstd, x, residual, weight, bias, n, eps);                \
    }
FRUGAL_DTYPES(LAYERNORM_FORWARD)

// mean[r] and rstd[r] of each row (=): the statistics backward needs. Grid: one block per row.
extern "C" __global__ void layernorm_statistics(float* mean_out, float* rstd_out, const float* x, int rows, int n,
                                                float eps) {
    const long long base = (long long)blockIdx.x * n;
    float sum = 0.f;
    for (int c = threadIdx.x; c < n; c += blockDim.x) sum += x[base + c];
    const float mean = block_sum(sum) / n;
    float squares = 0.f;
    for (int c = threadIdx.x; c < n; c += blockDim.x) squares += (x[base + c] - mean) * (x[base + c] - mean);
    const float total = block_sum(squares);
    if (threadIdx.x == 0) {
        mean_out[blockIdx.x] = mean;
        rstd_out[blockIdx.x] = rsqrtf(total / n + eps);
    }
}

// dweight[c] += Σ_r dy·x̂, dbias[c] += Σ_r dy (+=; either may be null). Block (32, 8).
extern "C" __global__ void layernorm_backward_parameters(float* dweight, float* dbias, const float* dy, const float* x,
                                                         const float* mean, const float* rstd, int rows, int n) {
    __shared__ float partial_w[8][33];
    __shared__ float partial_b[8][33];
    const int c = blockIdx.x * 32 + threadIdx.x;
    float sum_w = 0.f, sum_b = 0.f;
    if (c < n)
        for (int r = threadIdx.y; r < rows; r += blockDim.y) {
            const float g = dy[(long long)r * n + c];
            sum_w += g * (x[(long long)r * n + c] - mean[r]) * rstd[r];
            sum_b += g;
        }
    partial_w[threadIdx.y][threadIdx.x] = sum_w;
    partial_b[threadIdx.y][threadIdx.x] = sum_b;
    __syncthreads();
    if (threadIdx.y == 0 && c < n) {
        for (int k = 1; k < blockDim.y; k++) { sum_w += partial_w[k][threadIdx.x]; sum_b += partial_b[k][threadIdx.x]; }
        if (dweight) dweight[c] += sum_w;
        if (dbias) dbias[c] += sum_b;
    }
}

// dx = s·(g − mean(g) − x̂·mean(g·x̂)), g = dy·w (=; dx may alias dy). Grid: one block per row.
template <typename W>
__device__ void layernorm_backward_input(float* dx, const float* dy, const float* x, const W* weight, const float* mean,
                                         const float* rstd, int n) {
    const long long base = (long long)blockIdx.x * n;
    const float mu = mean[blockIdx.x], s = rstd[blockIdx.x];
    float sum_g = 0.f, sum_gx = 0.f;
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        const float g = dy[base + c] * to_float(weight[c]);
        sum_g += g;
        sum_gx += g * (x[base + c] - mu) * s;
    }
    const float mean_g = block_sum(sum_g) / n, mean_gx = block_sum(sum_gx) / n;
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        const float xhat = (x[base + c] - mu) * s;
        dx[base + c] = s * (dy[base + c] * to_float(weight[c]) - mean_g - xhat * mean_gx);
    }
}

#define LAYERNORM_BACKWARD(suffix, W)                                                                           \
    extern "C" __global__ void layernorm_backward_input_##suffix(float* dx, const float* dy, const float* x,     \
                                                                 const W* weight, const float* mean,            \
                                                                 const float* rstd, int rows, int n) {          \
        layernorm_backward_input<W>(dx, dy, x, weight, mean, rstd, n);                                          \
    }
FRUGAL_DTYPES(LAYERNORM_BACKWARD)
