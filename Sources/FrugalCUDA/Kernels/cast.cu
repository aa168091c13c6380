// cast.cu: conversions between f32, f16 and bf16 storage (round to nearest even), and the
// in-place rounding of f32 values to a 16-bit grid (emulated 16-bit storage).
#include "common.cuh"

// out[i] = (D) in[i] (=). Grid-stride over n.
#define CAST_TO(suffix_in, S, suffix_out, D)                                                                   \
    extern "C" __global__ void cast_##suffix_in##_to_##suffix_out(D* out, const S* in, long long n) {          \
        FRUGAL_GRID_STRIDE(i, n) out[i] = from_float<D>(to_float(in[i]));                                      \
    }
#define CAST_FROM(suffix_in, S) CAST_TO(suffix_in, S, f32, float) CAST_TO(suffix_in, S, f16, __half) \
    CAST_TO(suffix_in, S, bf16, __nv_bfloat16)
FRUGAL_DTYPES(CAST_FROM)

// x[i] = the nearest value of T to x[i], kept as f32 (in place).
#define ROUND(suffix, T)                                                                                       \
    extern "C" __global__ void round_f32_to_##suffix(float* x, long long n) {                                  \
        FRUGAL_GRID_STRIDE(i, n) x[i] = to_float(from_float<T>(x[i]));                                         \
    }
FRUGAL_DTYPES(ROUND)
