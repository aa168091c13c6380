// rmsnorm.cu: RMSNorm over the last dimension, fused with the residual add, and its backward.
//   h = x (+ residual);  out = h · rstd · (w + offset),  rstd = 1/√(mean(h²) + eps)
// Activations (x, residual, h, out) are stored as A, the weight as W; gradients and rstd are f32.
#include "common.cuh"

// out (=), residual_out (= h, optional), rstd (= per row, optional). Grid: one block per row.
// residual and residual_out may be null; residual_out may alias x or residual, out may alias x.
// With a residual, h is rounded to A (the sum as stored) before the norm, written or not.
template <typename A, typename W>
__device__ void rmsnorm_forward(A* out, A* residual_out, float* rstd, const A* x, const A* residual, const W* weight, int n,
                                float eps, float offset) {
    const long long base = (long long)blockIdx.x * n;
    float squares = 0.f;
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        float h = to_float(x[base + c]);
        if (residual) h = to_float(from_float<A>(h + to_float(residual[base + c])));
        if (residual_out) residual_out[base + c] = from_float<A>(h);
        squares += h * h;
    }
    const float s = rsqrtf(block_sum(squares) / n + eps);
    if (rstd && threadIdx.x == 0) rstd[blockIdx.x] = s;
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        float h;
        if (residual_out) h = to_float(residual_out[base + c]);
        else if (residual) h = to_float(from_float<A>(to_float(x[base + c]) + to_float(residual[base + c])));
        else h = to_float(x[base + c]);
        out[base + c] = from_float<A>(h * s * (to_float(weight[c]) + offset));
    }
}

#define RMSNORM_FORWARD(sa, A, sw, W)                                                                       \
    extern "C" __global__ void rmsnorm_forward_##sa##_##sw(A* out, A* residual_out, float* rstd, const A* x,  \
                                                           const A* residual, const W* weight, int rows,     \
                                                           int n, float eps, float offset) {                 \
        rmsnorm_forward<A, W>(out, residual_out, rstd, x, residual, weight, n, eps, offset);                   \
    }
FRUGAL_DTYPE_PAIRS(RMSNORM_FORWARD)

// rstd[r] = 1/√(mean(x[r]²) + eps) (=): the statistic backward needs. Grid: one block per row.
template <typename A>
__device__ void rmsnorm_rstd(float* rstd, const A* x, int n, float eps) {
    const long long base = (long long)blockIdx.x * n;
    float squares = 0.f;
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        const float v = to_float(x[base + c]);
        squares += v * v;
    }
    const float total = block_sum(squares);
    if (threadIdx.x == 0) rstd[blockIdx.x] = rsqrtf(total / n + eps);
}

// partials[split, c] = Σ_{r in split} dy[r,c] · x[r,c] · rstd[r] (=), the splits of reduce.cu's
// column sums. Block (32, 8): 32 columns, 8 row lanes.
template <typename A>
__device__ void rmsnorm_backward_weight(float* partials, const float* dy, const A* x, const float* rstd, int rows, int n,
                                        int rows_per_split) {
    __shared__ float partial[8][33];
    const int c = blockIdx.x * 32 + threadIdx.x;
    FRUGAL_SPLIT_ROWS(first, last, rows, rows_per_split);
    float sum = 0.f;
    if (c < n)
        for (int r = first + threadIdx.y; r < last; r += blockDim.y)
            sum += dy[(long long)r * n + c] * to_float(x[(long long)r * n + c]) * rstd[r];
    sum = column_lanes_sum(partial, sum);
    if (threadIdx.y == 0 && c < n) partials[(long long)blockIdx.y * n + c] = sum;
}

#define RMSNORM_STATISTICS(sa, A)                                                                             \
    extern "C" __global__ void rmsnorm_rstd_##sa(float* rstd, const A* x, int rows, int n, float eps) {         \
        rmsnorm_rstd<A>(rstd, x, n, eps);                                                                     \
    }                                                                                                         \
    extern "C" __global__ void rmsnorm_backward_weight_##sa(float* partials, const float* dy, const A* x,        \
                                                            const float* rstd, int rows, int n,                \
                                                            int rows_per_split) {                              \
        rmsnorm_backward_weight<A>(partials, dy, x, rstd, rows, n, rows_per_split);                           \
    }
FRUGAL_DTYPES(RMSNORM_STATISTICS)

// dx = s·dy·w' − s³/n · x · Σ_k dy_k·w'_k·x_k (=; dx may alias dy). Grid: one block per row.
template <typename A, typename W>
__device__ void rmsnorm_backward_input(float* dx, const float* dy, const A* x, const W* weight, const float* rstd, int n,
                                       float offset) {
    const long long base = (long long)blockIdx.x * n;
    const float s = rstd[blockIdx.x];
    float dot = 0.f;
    for (int c = threadIdx.x; c < n; c += blockDim.x) dot += dy[base + c] * (to_float(weight[c]) + offset) * to_float(x[base + c]);
    const float k = s * s * s * block_sum(dot) / n;
    for (int c = threadIdx.x; c < n; c += blockDim.x)
        dx[base + c] = s * dy[base + c] * (to_float(weight[c]) + offset) - k * to_float(x[base + c]);
}

#define RMSNORM_BACKWARD(sa, A, sw, W)                                                                            \
    extern "C" __global__ void rmsnorm_backward_input_##sa##_##sw(float* dx, const float* dy, const A* x,           \
                                                                  const W* weight, const float* rstd, int rows,   \
                                                                  int n, float offset) {                          \
        rmsnorm_backward_input<A, W>(dx, dy, x, weight, rstd, n, offset);                                         \
    }
FRUGAL_DTYPE_PAIRS(RMSNORM_BACKWARD)
