// embedding.cu: token embedding lookup (table of any float dtype → f32 rows) and its backward.
#include "quantized.cuh"

// out[t, :] = table[tokens[t], :] (=). Grid: one block per token.
template <typename T>
__device__ void embedding_forward(float* out, const T* table, const int* tokens, int dim) {
    const int t = blockIdx.x;
    const T* row = table + (long long)tokens[t] * dim;
    float* destination = out + (long long)t * dim;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) destination[c] = to_float(row[c]);
}

#define EMBEDDING_FORWARD(suffix, T)                                                                   \
    extern "C" __global__ void embedding_forward_##suffix(float* out, const T* table, const int* tokens, \
                                                          int count, int dim) {                        \
        embedding_forward<T>(out, table, tokens, dim);                                                 \
    }
FRUGAL_DTYPES(EMBEDDING_FORWARD)

// out[t, :] = the decoded row tokens[t] of a packed table (=): one thread per block of the row.
// Grid: one block per token.
#define EMBEDDING_FORWARD_QUANTIZED(name, values, bytes)                                                  \
    extern "C" __global__ void embedding_forward_##name(float* out, const unsigned char* table,            \
                                                        const int* tokens, int count, int dim) {           \
        const int t = blockIdx.x, blocks = dim / values;                                                  \
        const unsigned char* row = table + (long long)tokens[t] * blocks * bytes;                         \
        for (int k = threadIdx.x; k < blocks; k += blockDim.x)                                            \
            decode_##name(row + (long long)k * bytes, out + (long long)t * dim + (long long)k * values);  \
    }
FRUGAL_QUANTIZED(EMBEDDING_FORWARD_QUANTIZED)

// dtable[tokens[t], :] += dy[t, :] (+=, f32). Repeated tokens meet in atomic adds.
// Grid: one block per token.
extern "C" __global__ void embedding_backward(float* dtable, const float* dy, const int* tokens, int count, int dim) {
    const int t = blockIdx.x;
    float* row = dtable + (long long)tokens[t] * dim;
    const float* source = dy + (long long)t * dim;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) atomicAdd(row + c, source[c]);
}
