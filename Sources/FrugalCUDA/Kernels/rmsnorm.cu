// rmsnorm.cu: RMSNorm over the last dimension, fused with the residual add, and its backward.
//   h = x (+ residual);  out = h · rstd · (w + offset),  rstd = 1/√(mean(h²) + eps)
#include "common.cuh"

// out (=), residual_out (= h, optional), rstd (= per row, optional). Grid: one block per row.
// residual and residual_out may be null; residual_out may alias x or residual, out may alias x.
template <typename W>
__device__ void rmsnorm_forward(float* out, float* residual_out, float* rstd, const float* x, const float* residual,
                                const W* weight, int n, float eps, float offset) {
    const long long base = (long long)blockIdx.x * n;
    float squares = 0.f;
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        float h = x[base + c];
        if (residual) h += residual[base + c];
        if (residual_out) residual_out[base + c] = h;
        squares += h * h;
    }
    const float s = rsqrtf(block_sum(squares) / n + eps);
    if (rstd && threadIdx.x == 0) rstd[blockIdx.x] = s;
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        float h;
        if (residual_out) h = residual_out[base + c];
        else h = x[base + c] + (residual ? residual[base + c] : 0.f);
        out[base + c] = h * s * (to_float(weight[c]) + offset);
    }
}

#define RMSNORM_FORWARD(suffix, W)                                                                         \
    extern "C" __global__ void rmsnorm_forward_##suffix(float* out, float* residual_out, float* rstd,       \
                                                        const float* x, const float* residual, const W* weight, \
                                                        int rows, int n, float eps, float offset) {         \
        rmsnorm_forward<W>(out, residual_out, rstd, x, residual, weight, n, eps, offset);                    \
    }
FRUGAL_DTYPES(RMSNORM_FORWARD)

// rstd[r] = 1/√(mean(x[r]²) + eps) (=): the statistic backward needs. Grid: one block per row.
extern "C" __global__ void rmsnorm_rstd(float* rstd, const float* x, int rows, int n, float eps) {
    const long long base = (long long)blockIdx.x * n;
    float squares = 0.f;
    for (int c = threadIdx.x; c < n; c += blockDim.x) squares += x[base + c] * x[base + c];
    const float total = block_sum(squares);
    if (threadIdx.x == 0) rstd[blockIdx.x] = rsqrtf(total / n + eps);
}

// dweight[c] += Σ_r dy[r,c] · x[r,c] · rstd[r] (+=). Block (32, 8): 32 columns, 8 row lanes.
extern "C" __global__ void rmsnorm_backward_weight(float* dweight, const float* dy, const float* x, const float* rstd,
                                                   int rows, int n) {
    __shared__ float partial[8][33];
    const int c = blockIdx.x * 32 + threadIdx.x;
    float sum = 0.f;
    if (c < n)
        for (int r = threadIdx.y; r < rows; r += blockDim.y) sum += dy[(long long)r * n + c] * x[(long long)r * n + c] * rstd[r];
    partial[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0 && c < n) {
        for (int k = 1; k < blockDim.y; k++) sum += partial[k][threadIdx.x];
        dweight[c] += sum;
    }
}

// dx = s·dy·w' − s³/n · x · Σ_k dy_k·w'_k·x_k (=; dx may alias dy). Grid: one block per row.
template <typename W>
__device__ void rmsnorm_backward_input(float* dx, const float* dy, const float* x, const W* weight, const float* rstd,
                                       int n, float offset) {
    const long long base = (long long)blockIdx.x * n;
    const float s = rstd[blockIdx.x];
    float dot = 0.f;
    for (int c = threadIdx.x; c < n; c += blockDim.x) dot += dy[base + c] * (to_float(weight[c]) + offset) * x[base + c];
    const float k = s * s * s * block_sum(dot) / n;
    for (int c = threadIdx.x; c < n; c += blockDim.x)
        dx[base + c] = s * dy[base + c] * (to_float(weight[c]) + offset) - k * x[base + c];
}

#define RMSNORM_BACKWARD(suffix, W)                                                                            \
    extern "C" __global__ void rmsnorm_backward_input_##suffix(float* dx, const float* dy, const float* x,      \
                                                               const W* weight, const float* rstd, int rows,   \
                                                               int n, float offset) {                          \
        rmsnorm_backward_input<W>(dx, dy, x, weight, rstd, n, offset);                                         \
    }
FRUGAL_DTYPES(RMSNORM_BACKWARD)
