// quantized.cuh: decoders of GGUF's packed block types (laid out exactly as ggml lays them out)
// and of Frugal's NF4 blocks into f32, bit-identical to BlockQuantization.swift. Each decodes one
// block at `block` into `y` of any float storage type T (each value rounded once from f32).
// Blocks may sit at any even byte offset.
#pragma once
#include "common.cuh"

__device__ __forceinline__ float half_at(const unsigned char* p) {
    return __half2float(__ushort_as_half((unsigned short)(p[0] | (p[1] << 8))));
}

// Each GGUF type's value j of the block at `block`, in f32; decode_<type> writes a whole block.

// q8_0, 34 bytes: { f16 d; i8 qs[32] } → qs[j]·d
__device__ __forceinline__ float q8_0_value(const unsigned char* block, int j) {
    return (float)(signed char)block[2 + j] * half_at(block);
}

// q4_0, 18 bytes: { f16 d; u8 qs[16] } → (q − 8)·d, values 0..<16 in the low nibbles, 16..<32 in the high
__device__ __forceinline__ float q4_0_value(const unsigned char* block, int j) {
    const int q = block[2 + (j & 15)];
    return (float)((j < 16 ? q & 0x0F : q >> 4) - 8) * half_at(block);
}

// q4_1, 20 bytes: { f16 d; f16 m; u8 qs[16] } → q·d + m, nibbles as q4_0's
__device__ __forceinline__ float q4_1_value(const unsigned char* block, int j) {
    const int q = block[4 + (j & 15)];
    return (float)(j < 16 ? q & 0x0F : q >> 4) * half_at(block) + half_at(block + 2);
}

// ggml's get_scale_min_k4: the 6-bit scale and min of sub-block j (0..<8).
__device__ __forceinline__ void scale_min_k4(int j, const unsigned char* q, int* scale, int* min) {
    if (j < 4) {
        *scale = q[j] & 63;
        *min = q[j + 4] & 63;
    } else {
        *scale = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        *min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// q4_K, 144 bytes: { f16 d; f16 dmin; u8 scales[12]; u8 qs[128] } → (d·sc)·q − dmin·m per sub-block
// of 32; each 64 values share 32 bytes of qs, the first 32 in the low nibbles.
__device__ __forceinline__ float q4_K_value(const unsigned char* block, int j) {
    const int chunk = j >> 6, r = j & 63, sub = 2 * chunk + (r >> 5);
    int sc, m;
    scale_min_k4(sub, block + 4, &sc, &m);
    const float scale = half_at(block) * (float)sc, min = half_at(block + 2) * (float)m;
    const int q = block[16 + 32 * chunk + (r & 31)];
    return scale * (float)(r < 32 ? q & 0x0F : q >> 4) - min;
}

// q6_K, 210 bytes: { u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d } → (d·sc)·(q − 32). Each half of 128
// values: quarter k (32 values) takes its low 4 bits from ql (k = 0, 1: low nibbles of ql[l], ql[l + 32];
// k = 2, 3: their high nibbles), 2 high bits from qh[l] >> 2k, and its scale from sc[l / 16 + 2k].
__device__ __forceinline__ float q6_K_value(const unsigned char* block, int j) {
    const int half = j >> 7, quarter = (j >> 5) & 3, l = j & 31;
    const unsigned char* ql = block + 64 * half;
    const int low = ql[l + 32 * (quarter & 1)];
    const int high = (block[128 + 32 * half + l] >> (2 * quarter)) & 3;
    const int q = (quarter < 2 ? low & 0x0F : low >> 4) | (high << 4);
    const float scale = half_at(block + 208) * (float)(signed char)block[192 + 8 * half + l / 16 + 2 * quarter];
    return scale * (float)(q - 32);
}

// decode_<type>: a whole block into y[0 ..< values], each value rounded once to T.
#define FRUGAL_DECODE_BLOCK(name, values, bytes)                                                          \
    template <typename T>                                                                                \
    __device__ __forceinline__ void decode_##name(const unsigned char* block, T* y) {                    \
        for (int j = 0; j < values; j++) y[j] = from_float<T>(name##_value(block, j));                   \
    }

// NormalFloat-4's 16 values, bitsandbytes' nf4 code book (BlockQuantization.nf4Codes).
__constant__ float nf4_codes[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

// nf4, 134 bytes: { f16 d; u8 scales[4]; u8 qs[128] } → nf4_codes[q]·(scales[j]·d) for sub-block
// j of 64; byte l of its 32 holds value 2l in the high nibble and 2l + 1 in the low one.
template <typename T>
__device__ __forceinline__ void decode_nf4(const unsigned char* block, T* y) {
    const float d = half_at(block);
    for (int j = 0; j < 4; j++) {
        const float absmax = (float)block[2 + j] * d;
        const unsigned char* qs = block + 6 + 32 * j;
        for (int l = 0; l < 32; l++) {
            y[64 * j + 2 * l] = from_float<T>(nf4_codes[qs[l] >> 4] * absmax);
            y[64 * j + 2 * l + 1] = from_float<T>(nf4_codes[qs[l] & 0x0F] * absmax);
        }
    }
}

// X(name, block values, block bytes) for every packed type: GGUF's, then Frugal's nf4.
#define FRUGAL_GGUF_QUANTIZED(X) X(q8_0, 32, 34) X(q4_0, 32, 18) X(q4_1, 32, 20) X(q4_K, 256, 144) X(q6_K, 256, 210)
#define FRUGAL_QUANTIZED(X) FRUGAL_GGUF_QUANTIZED(X) X(nf4, 256, 134)
FRUGAL_GGUF_QUANTIZED(FRUGAL_DECODE_BLOCK)
