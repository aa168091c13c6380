// cuda_fp16.h for the CPU emulation (cuda_emulation.h): IEEE half through clang's _Float16.
#pragma once
#include <cstdint>
#include <cstring>

struct __half {
    uint16_t bits;
};
inline float __half2float(__half h) { _Float16 f; std::memcpy(&f, &h.bits, 2); return (float)f; }
inline __half __float2half_rn(float x) { _Float16 f = (_Float16)x; __half h; std::memcpy(&h.bits, &f, 2); return h; }
inline unsigned short __half_as_ushort(__half h) { return h.bits; }
inline __half __ushort_as_half(unsigned short bits) { __half h; h.bits = bits; return h; }
