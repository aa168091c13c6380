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

// nf4, the QLoRA base decoded three times a step: one thread per byte of codes (two values),
// grid-stride over blocks·128, so a warp reads 32 neighbouring bytes and writes 64 neighbouring
// values (one thread per 256-value block made every store of a warp touch 32 places). Thread i
// decodes byte i % 128 of block i / 128 into values 2i and 2i + 1, with decode_nf4's arithmetic
// (bit for bit). The code book is staged in shared memory: constant memory serves a warp's 16
// different indices one address at a time.
#define DEQUANTIZE_NF4(suffix, T)                                                                        \
    extern "C" __global__ void dequantize_nf4##suffix(T* out, const unsigned char* data, long long blocks) { \
        __shared__ float codes[16];                                                                      \
        if (threadIdx.x < 16) codes[threadIdx.x] = nf4_codes[threadIdx.x];                               \
        __syncthreads();                                                                                 \
        FRUGAL_GRID_STRIDE(i, blocks * 128) {                                                            \
            const unsigned char* block = data + (i >> 7) * 134;                                          \
            const int byte = (int)(i & 127);                                                             \
            const float absmax = (float)block[2 + (byte >> 5)] * half_at(block);                         \
            const int q = block[6 + byte];                                                               \
            out[2 * i] = from_float<T>(codes[q >> 4] * absmax);                                          \
            out[2 * i + 1] = from_float<T>(codes[q & 0x0F] * absmax);                                    \
        }                                                                                                \
    }
DEQUANTIZE_NF4(, float) DEQUANTIZE_NF4(_to_f16, __half) DEQUANTIZE_NF4(_to_bf16, __nv_bfloat16)
