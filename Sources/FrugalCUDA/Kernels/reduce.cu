// reduce.cu: reductions — Σx² in double (deterministic: fixed blocks, then one block in order),
// the all-finite check, and column sums (the bias gradient).
#include "common.cuh"

// partials[blockIdx.x] = Σ x² over the block's contiguous chunk of `chunk` elements (=).
extern "C" __global__ void sum_squares_partial(double* partials, const float* x, long long n, long long chunk) {
    const long long first = (long long)blockIdx.x * chunk, last = min(n, first + chunk);
    double sum = 0.0;
    for (long long i = first + threadIdx.x; i < last; i += blockDim.x) sum += (double)x[i] * (double)x[i];
    sum = block_sum_double(sum);
    if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

// out[0] = Σ partials (=), in a fixed order. One block.
extern "C" __global__ void sum_partials(double* out, const double* partials, int count) {
    double sum = 0.0;
    for (int i = threadIdx.x; i < count; i += blockDim.x) sum += partials[i];
    sum = block_sum_double(sum);
    if (threadIdx.x == 0) out[0] = sum;
}

// flag[0] = 0 when any x is NaN or ±∞ (the caller sets it to 1 first).
extern "C" __global__ void all_finite(int* flag, const float* x, long long n) {
    FRUGAL_GRID_STRIDE(i, n) if (!isfinite(x[i])) flag[0] = 0;
}

// out[c] += Σ_r x[r, c] (+=). Block (32, 8): 32 columns, 8 row lanes.
extern "C" __global__ void column_sum(float* out, const float* x, int rows, int n) {
    __shared__ float partial[8][33];
    const int c = blockIdx.x * 32 + threadIdx.x;
    float sum = 0.f;
    if (c < n)
        for (int r = threadIdx.y; r < rows; r += blockDim.y) sum += x[(long long)r * n + c];
    partial[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0 && c < n) {
        for (int k = 1; k < blockDim.y; k++) sum += partial[k][threadIdx.x];
        out[c] += sum;
    }
}
