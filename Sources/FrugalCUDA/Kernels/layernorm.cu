// layernorm.cu: LayerNorm over the last dimension, fused with the residual add, and its backward.
//   h = x (+ residual);  out = (h − μ) · rstd · w + b,  rstd = 1/√(var(h) + eps) (biased variance)
// Activations (x, residual, h, out) are stored as A, weight and bias as W; gradients and the
// statistics are f32.
#include "common.cuh"

// h[c] of one row: x (+ residual, rounded to A as the sum is stored).
template <typename A>
__device__ __forceinline__ float layernorm_input(const A* x, const A* residual, long long at) {
    const float value = to_float(x[at]);
    return residual ? to_float(from_float<A>(value + to_float(residual[at]))) : value;
}

// out (=), residual_out (= h, optional), mean and rstd (= per row, optional). bias may be null.
// Grid: one block per row. residual_out may alias x or residual; out may alias x.
template <typename A, typename W>
__device__ void layernorm_forward(A* out, A* residual_out, float* mean_out, float* rstd_out, const A* x, const A* residual,
                                  const W* weight, const W* bias, int n, float eps) {
    const long long base = (long long)blockIdx.x * n;
    // Once h is written, it is read back from residual_out (x or residual may be overwritten).
    const A* h = residual_out ? residual_out : x;
    const A* r = residual_out ? nullptr : residual;
    float sum = 0.f;
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        const float value = layernorm_input(x, residual, base + c);
        if (residual_out) residual_out[base + c] = from_float<A>(value);
        sum += value;
    }
    const float mean = block_sum(sum) / n;
    float squares = 0.f;
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        const float value = layernorm_input(h, r, base + c);
        squares += (value - mean) * (value - mean);
    }
    const float s = rsqrtf(block_sum(squares) / n + eps);
    if (threadIdx.x == 0) {
        if (mean_out) mean_out[blockIdx.x] = mean;
        if (rstd_out) rstd_out[blockIdx.x] = s;
    }
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        const float value = layernorm_input(h, r, base + c);
        out[base + c] = from_float<A>((value - mean) * s * to_float(weight[c]) + (bias ? to_float(bias[c]) : 0.f));
    }
}

#define LAYERNORM_FORWARD(sa, A, sw, W)                                                                            \
    extern "C" __global__ void layernorm_forward_##sa##_##sw(A* out, A* residual_out, float* mean, float* rstd,     \
                                                             const A* x, const A* residual, const W* weight,       \
                                                             const W* bias, int rows, int n, float eps) {          \
        layernorm_forward<A, W>(out, residual_out, mean, rstd, x, residual, weight, bias, n, eps);                 \
    }
FRUGAL_DTYPE_PAIRS(LAYERNORM_FORWARD)

// mean[r] and rstd[r] of each row (=): the statistics backward needs. Grid: one block per row.
template <typename A>
__device__ void layernorm_statistics(float* mean_out, float* rstd_out, const A* x, int n, float eps) {
    const long long base = (long long)blockIdx.x * n;
    float sum = 0.f;
    for (int c = threadIdx.x; c < n; c += blockDim.x) sum += to_float(x[base + c]);
    const float mean = block_sum(sum) / n;
    float squares = 0.f;
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        const float centered = to_float(x[base + c]) - mean;
        squares += centered * centered;
    }
    const float total = block_sum(squares);
    if (threadIdx.x == 0) {
        mean_out[blockIdx.x] = mean;
        rstd_out[blockIdx.x] = rsqrtf(total / n + eps);
    }
}

// partials_w[split, c] = Σ_{r in split} dy·x̂, partials_b[split, c] = Σ_{r in split} dy (=; either
// may be null), the splits of reduce.cu's column sums. Block (32, 8).
template <typename A>
__device__ void layernorm_backward_parameters(float* partials_w, float* partials_b, const float* dy, const A* x,
                                              const float* mean, const float* rstd, int rows, int n, int rows_per_split) {
    __shared__ float partial_w[8][33];
    __shared__ float partial_b[8][33];
    const int c = blockIdx.x * 32 + threadIdx.x;
    FRUGAL_SPLIT_ROWS(first, last, rows, rows_per_split);
    float sum_w = 0.f, sum_b = 0.f;
    if (c < n)
        for (int r = first + threadIdx.y; r < last; r += blockDim.y) {
            const float g = dy[(long long)r * n + c];
            sum_w += g * (to_float(x[(long long)r * n + c]) - mean[r]) * rstd[r];
            sum_b += g;
        }
    sum_w = column_lanes_sum(partial_w, sum_w);
    sum_b = column_lanes_sum(partial_b, sum_b);
    if (threadIdx.y == 0 && c < n) {
        if (partials_w) partials_w[(long long)blockIdx.y * n + c] = sum_w;
        if (partials_b) partials_b[(long long)blockIdx.y * n + c] = sum_b;
    }
}

#define LAYERNORM_STATISTICS(sa, A)                                                                                \
    extern "C" __global__ void layernorm_statistics_##sa(float* mean_out, float* rstd_out, const A* x, int rows,     \
                                                         int n, float eps) {                                       \
        layernorm_statistics<A>(mean_out, rstd_out, x, n, eps);                                                    \
    }                                                                                                              \
    extern "C" __global__ void layernorm_backward_parameters_##sa(float* partials_w, float* partials_b,              \
                                                                  const float* dy, const A* x, const float* mean,   \
                                                                  const float* rstd, int rows, int n,               \
                                                                  int rows_per_split) {                             \
        layernorm_backward_parameters<A>(partials_w, partials_b, dy, x, mean, rstd, rows, n, rows_per_split);      \
    }
FRUGAL_DTYPES(LAYERNORM_STATISTICS)

// dx = s·(g − mean(g) − x̂·mean(g·x̂)), g = dy·w (=; dx may alias dy). Grid: one block per row.
template <typename A, typename W>
__device__ void layernorm_backward_input(float* dx, const float* dy, const A* x, const W* weight, const float* mean,
                                         const float* rstd, int n) {
    const long long base = (long long)blockIdx.x * n;
    const float mu = mean[blockIdx.x], s = rstd[blockIdx.x];
    float sum_g = 0.f, sum_gx = 0.f;
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        const float g = dy[base + c] * to_float(weight[c]);
        sum_g += g;
        sum_gx += g * (to_float(x[base + c]) - mu) * s;
    }
    const float mean_g = block_sum(sum_g) / n, mean_gx = block_sum(sum_gx) / n;
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        const float xhat = (to_float(x[base + c]) - mu) * s;
        dx[base + c] = s * (dy[base + c] * to_float(weight[c]) - mean_g - xhat * mean_gx);
    }
}

#define LAYERNORM_BACKWARD(sa, A, sw, W)                                                                            \
    extern "C" __global__ void layernorm_backward_input_##sa##_##sw(float* dx, const float* dy, const A* x,           \
                                                                    const W* weight, const float* mean,             \
                                                                    const float* rstd, int rows, int n) {           \
        layernorm_backward_input<A, W>(dx, dy, x, weight, mean, rstd, n);                                           \
    }
FRUGAL_DTYPE_PAIRS(LAYERNORM_BACKWARD)
