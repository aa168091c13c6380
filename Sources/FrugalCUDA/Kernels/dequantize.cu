// dequantize.cu: the packed block types (quantized.cuh) decoded to f32 (=), one thread per
// block, grid-stride over `blocks`: out[b·values ..< (b+1)·values] from data[b·bytes ...].
#include "quantized.cuh"

#define DEQUANTIZE(name, values, bytes)                                                                  \
    extern "C" __global__ void dequantize_##name(float* out, const unsigned char* data, long long blocks) { \
        FRUGAL_GRID_STRIDE(b, blocks) decode_##name(data + b * bytes, out + b * values);                   \
    }
FRUGAL_QUANTIZED(DEQUANTIZE)
