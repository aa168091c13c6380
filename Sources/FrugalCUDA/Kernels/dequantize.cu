// dequantize.cu: the packed block types (quantized.cuh) decoded (=), one thread per block,
// grid-stride over `blocks`: out[b·values ..< (b+1)·values] from data[b·bytes ...] — to f32
// (`dequantize_<type>`), or rounded once to f16 or bf16 (`dequantize_<type>_to_<dtype>`: a
// QLoRA base's tiles for 16-bit GEMMs).
#include "quantized.cuh"

#define DEQUANTIZE_TO(name, values, bytes, suffix, T)                                                    \
    extern "C" __global__ void dequantize_##name##_to_##suffix(T* out, const unsigned char* data,          \
                                                               long long blocks) {                         \
        FRUGAL_GRID_STRIDE(b, blocks) decode_##name(data + b * bytes, out + b * values);                    \
    }
#define DEQUANTIZE(name, values, bytes)                                                                  \
    extern "C" __global__ void dequantize_##name(float* out, const unsigned char* data, long long blocks) { \
        FRUGAL_GRID_STRIDE(b, blocks) decode_##name(data + b * bytes, out + b * values);                   \
    }                                                                                                    \
    DEQUANTIZE_TO(name, values, bytes, f16, __half) DEQUANTIZE_TO(name, values, bytes, bf16, __nv_bfloat16)
FRUGAL_QUANTIZED(DEQUANTIZE)
