// elementwise.cu: add, multiply, scale and the bias add, over n elements (grid-stride loops).
// Outputs may alias inputs: each element is read before it is written, by the same thread.
#include "common.cuh"

#define ELEMENTWISE(suffix, T)                                                                                 \
    /* out = a + b (=) */                                                                                     \
    extern "C" __global__ void add_##suffix(T* out, const T* a, const T* b, long long n) {                    \
        FRUGAL_GRID_STRIDE(i, n) out[i] = from_float<T>(to_float(a[i]) + to_float(b[i]));                     \
    }                                                                                                          \
    /* out = a · b (=) */                                                                                     \
    extern "C" __global__ void multiply_##suffix(T* out, const T* a, const T* b, long long n) {               \
        FRUGAL_GRID_STRIDE(i, n) out[i] = from_float<T>(to_float(a[i]) * to_float(b[i]));                     \
    }                                                                                                          \
    /* x *= s (in place) */                                                                                   \
    extern "C" __global__ void scale_##suffix(T* x, float s, long long n) {                                   \
        FRUGAL_GRID_STRIDE(i, n) x[i] = from_float<T>(to_float(x[i]) * s);                                    \
    }
FRUGAL_DTYPES(ELEMENTWISE)

// out[r, c] += vector[c] for every row (+=; the bias of a linear layer): add_row_vector_<out>_<vector>
#define ADD_ROW_VECTOR(so, O, sv, V)                                                                           \
    extern "C" __global__ void add_row_vector_##so##_##sv(O* out, const V* vector, long long rows, int n) {    \
        FRUGAL_GRID_STRIDE(i, rows * n) out[i] = from_float<O>(to_float(out[i]) + to_float(vector[i % n]));    \
    }
FRUGAL_DTYPE_PAIRS(ADD_ROW_VECTOR)
