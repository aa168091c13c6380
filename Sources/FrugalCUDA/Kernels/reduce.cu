// reduce.cu: reductions — Σx² in double (deterministic: fixed blocks, then one block in order),
// the all-finite check, and column sums in row splits (the bias gradient; the norms' parameter
// gradients use the same splits).
#include "common.cuh"

// partials[c] = Σ x² over chunk c of any of several f32 tensors (=, double), a block per chunk (one
// launch for a whole list): chunk c's two words are its first value's address and its value count.
extern "C" __global__ void sum_squares_chunks(double* partials, const unsigned long long* chunks) {
    const float* x = (const float*)chunks[2 * (long long)blockIdx.x];
    const long long n = (long long)chunks[2 * (long long)blockIdx.x + 1];
    double sum = 0.0;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) sum += (double)x[i] * (double)x[i];
    sum = block_sum_double(sum);
    if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

// totals[t] = Σ partials[offsets[t] ..< offsets[t + 1]] (=), in a fixed order: a block per tensor.
extern "C" __global__ void sum_partials_ranges(double* totals, const double* partials, const int* offsets) {
    double sum = 0.0;
    for (int i = offsets[blockIdx.x] + threadIdx.x; i < offsets[blockIdx.x + 1]; i += blockDim.x) sum += partials[i];
    sum = block_sum_double(sum);
    if (threadIdx.x == 0) totals[blockIdx.x] = sum;
}

// Zeros chunks of several f32 tensors, a block per chunk: chunk c's two words are its first
// value's address and its value count.
extern "C" __global__ void zero_chunks(const unsigned long long* chunks) {
    float* x = (float*)chunks[2 * (long long)blockIdx.x];
    const long long n = (long long)chunks[2 * (long long)blockIdx.x + 1];
    for (long long i = threadIdx.x; i < n; i += blockDim.x) x[i] = 0.f;
}

// flag[0] = 0 when any x is NaN or ±∞ (the caller sets it to 1 first).
extern "C" __global__ void all_finite(int* flag, const float* x, long long n) {
    FRUGAL_GRID_STRIDE(i, n) if (!isfinite(x[i])) flag[0] = 0;
}

// Column reductions run in row splits, a block per 32 columns and split: each split's partial sums
// (=, (splits, n)), then `column_partials_add` adds them in split order (deterministic).
// partials[split, c] = Σ_{r in split} x[r, c] (=). Block (32, 8): 32 columns, 8 row lanes.
extern "C" __global__ void column_sum(float* partials, const float* x, int rows, int n, int rows_per_split) {
    __shared__ float partial[8][33];
    const int c = blockIdx.x * 32 + threadIdx.x;
    FRUGAL_SPLIT_ROWS(first, last, rows, rows_per_split);
    float sum = 0.f;
    if (c < n)
        for (int r = first + threadIdx.y; r < last; r += blockDim.y) sum += x[(long long)r * n + c];
    sum = column_lanes_sum(partial, sum);
    if (threadIdx.y == 0 && c < n) partials[(long long)blockIdx.y * n + c] = sum;
}

// out[c] += Σ_s partials[s, c] (+=), splits in order. Grid-stride over n.
extern "C" __global__ void column_partials_add(float* out, const float* partials, int splits, int n) {
    FRUGAL_GRID_STRIDE(c, n) {
        float sum = 0.f;
        for (int s = 0; s < splits; s++) sum += partials[(long long)s * n + c];
        out[c] += sum;
    }
}
