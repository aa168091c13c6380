// dequantize.cu: the packed block types (quantized.cuh) decoded (=) from data[b·bytes ...] into
// out[b·values ..< (b+1)·values] for b < `blocks` — to f32 (`dequantize_<type>`), or rounded once
// to f16 or bf16 (`dequantize_<type>_to_<dtype>`: a QLoRA base's tiles for 16-bit GEMMs).
#include "quantized.cuh"

// GGUF's types: one thread per value, grid-stride over blocks·values, so a warp writes 32
// neighbouring values (one thread per block made each store of a warp touch 32 places).
#define DEQUANTIZE_TO(name, values, bytes, suffix, T)                                                    \
    extern "C" __global__ void dequantize_##name##suffix(T* out, const unsigned char* data, long long blocks) { \
        FRUGAL_GRID_STRIDE(i, blocks * values) {                                                         \
            out[i] = from_float<T>(name##_value(data + (i / values) * bytes, (int)(i % values)));        \
        }                                                                                                \
    }
#define DEQUANTIZE(name, values, bytes)                                                                  \
    DEQUANTIZE_TO(name, values, bytes, , float) DEQUANTIZE_TO(name, values, bytes, _to_f16, __half)       \
    DEQUANTIZE_TO(name, values, bytes, _to_bf16, __nv_bfloat16)
FRUGAL_GGUF_QUANTIZED(DEQUANTIZE)

// nf4, the QLoRA base decoded up to three times a step: one thread per 4 bytes of codes (eight
// values), grid-stride over blocks·32, so a warp reads 128 neighbouring bytes and writes 256
// neighbouring values, each thread with one 16-byte store (two for f32) when `out` is 16-byte
// aligned (value by value otherwise). Thread i decodes bytes 4(i % 32) ..< 4(i % 32) + 4 of block
// i / 32 into values 8i ..< 8i + 8, with decode_nf4's arithmetic (bit for bit). The code book is
// staged in shared memory: constant memory serves a warp's 16 different indices one address at a time.
#define DEQUANTIZE_NF4(suffix, T)                                                                        \
    extern "C" __global__ void dequantize_nf4##suffix(T* out, const unsigned char* data, long long blocks) { \
        __shared__ float codes[16];                                                                      \
        if (threadIdx.x < 16) codes[threadIdx.x] = nf4_codes[threadIdx.x];                               \
        __syncthreads();                                                                                 \
        const bool aligned = ((unsigned long long)out & 15) == 0;                                        \
        FRUGAL_GRID_STRIDE(i, blocks * 32) {                                                             \
            const unsigned char* block = data + (i >> 5) * 134;                                          \
            const int quad = (int)(i & 31);                                                              \
            const float absmax = (float)block[2 + (quad >> 3)] * half_at(block);                         \
            alignas(16) T values[8];                                                                     \
            _Pragma("unroll") for (int b = 0; b < 4; b++) {                                              \
                const int q = block[6 + 4 * quad + b];                                                   \
                values[2 * b] = from_float<T>(codes[q >> 4] * absmax);                                   \
                values[2 * b + 1] = from_float<T>(codes[q & 0x0F] * absmax);                             \
            }                                                                                            \
            T* y = out + 8 * i;                                                                          \
            if (aligned) {                                                                               \
                _Pragma("unroll") for (int c = 0; c < (int)sizeof(values) / 16; c++)                     \
                    reinterpret_cast<uint4*>(y)[c] = reinterpret_cast<const uint4*>(values)[c];          \
            } else {                                                                                     \
                _Pragma("unroll") for (int j = 0; j < 8; j++) y[j] = values[j];                          \
            }                                                                                            \
        }                                                                                                \
    }
DEQUANTIZE_NF4(, float) DEQUANTIZE_NF4(_to_f16, __half) DEQUANTIZE_NF4(_to_bf16, __nv_bfloat16)
