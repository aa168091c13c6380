// common.cuh: types and helpers shared by Frugal's CUDA kernels (compiled at run time by NVRTC).
//
// Conventions of every kernel file:
// - one op per file, forward beside backward; `extern "C"` entry points with stable names,
//   suffixed by the storage dtype (`_f32`, `_f16`, `_bf16`) where the op reads 16-bit storage,
//   the activations' before the weights' where both vary (`rmsnorm_forward_bf16_f32`);
// - arguments in llm.c's order: outputs, saved statistics, inputs, then dimensions and scalars;
// - storage may be 16-bit, arithmetic and accumulation are f32 (sums of many terms in double);
// - each kernel says which outputs it overwrites (=) and which it accumulates into (+=).
#pragma once
#include <cuda_fp16.h>
#include <cuda_bf16.h>

// Loads and stores that widen 16-bit storage to f32 and round f32 back (round to nearest even).
__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Instantiates a macro once per storage dtype: X(suffix, type).
#define FRUGAL_DTYPES(X) X(f32, float) X(f16, __half) X(bf16, __nv_bfloat16)
// Instantiates a macro once per pair of storage dtypes (an activation's and a weight's, a
// source's and a destination's): X(suffix_a, type_a, suffix_b, type_b).
#define FRUGAL_DTYPE_PAIRS(X)                                                                           \
    X(f32, float, f32, float) X(f32, float, f16, __half) X(f32, float, bf16, __nv_bfloat16)            \
    X(f16, __half, f32, float) X(f16, __half, f16, __half) X(f16, __half, bf16, __nv_bfloat16)         \
    X(bf16, __nv_bfloat16, f32, float) X(bf16, __nv_bfloat16, f16, __half)                             \
    X(bf16, __nv_bfloat16, bf16, __nv_bfloat16)

// +∞ without <cmath>.
#define FRUGAL_INFINITY __int_as_float(0x7f800000)

// Sum of a value over the 32 lanes of a warp.
__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// Maximum of a value over the 32 lanes of a warp.
__device__ __forceinline__ float warp_max(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// Sum of a double over the 32 lanes of a warp.
__device__ __forceinline__ double warp_sum_double(double v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the total.
// Safe to call repeatedly in one kernel.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float partial[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    return warp_sum(lane < warps ? partial[lane] : 0.f);
}

// Maximum over the block (blockDim.x a multiple of 32); every thread gets it.
__device__ __forceinline__ float block_max(float v) {
    __shared__ float partial[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    return warp_max(lane < warps ? partial[lane] : -FRUGAL_INFINITY);
}

// Sum of doubles over the block (blockDim.x a multiple of 32); every thread gets the total.
__device__ __forceinline__ double block_sum_double(double v) {
    __shared__ double partial[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum_double(v);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    return warp_sum_double(lane < warps ? partial[lane] : 0.0);
}

// The first element index and stride of a grid-stride loop over n elements.
#define FRUGAL_GRID_STRIDE(i, n) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (long long)gridDim.x * blockDim.x)

// Column reductions (reduce.cu's column sums, the norms' parameter gradients) run in row splits, a
// block (32, 8) per 32 columns and split, each writing its split's partial sums for
// `column_partials_add` to add in split order.
// The rows of split blockIdx.y: [first, last).
#define FRUGAL_SPLIT_ROWS(first, last, rows, rows_per_split) \
    const int first = blockIdx.y * (rows_per_split), last = min((rows), first + (rows_per_split))

// The sum over a block (32, 8)'s 8 row lanes, for lane threadIdx.y == 0.
__device__ __forceinline__ float column_lanes_sum(float (*partial)[33], float sum) {
    partial[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0)
        for (int k = 1; k < blockDim.y; k++) sum += partial[k][threadIdx.x];
    return sum;
}
