// quantized.cuh: decoders of GGUF's packed block types (laid out exactly as ggml lays them out)
// and of Frugal's NF4 blocks into f32, bit-identical to BlockQuantization.swift. Each decodes one
// block at `block` into `y` of any float storage type T (each value rounded once from f32).
// Blocks may sit at any even byte offset.
#pragma once
#include "common.cuh"

__device__ __forceinline__ float half_at(const unsigned char* p) {
    return __half2float(__ushort_as_half((unsigned short)(p[0] | (p[1] << 8))));
}

// q8_0, 34 bytes: { f16 d; i8 qs[32] } → qs[i]·d
template <typename T>
__device__ __forceinline__ void decode_q8_0(const unsigned char* block, T* y) {
    const float d = half_at(block);
    for (int i = 0; i < 32; i++) y[i] = from_float<T>((float)(signed char)block[2 + i] * d);
}

// q4_0, 18 bytes: { f16 d; u8 qs[16] } → (q − 8)·d, low nibbles first
template <typename T>
__device__ __forceinline__ void decode_q4_0(const unsigned char* block, T* y) {
    const float d = half_at(block);
    for (int i = 0; i < 16; i++) {
        const int q = block[2 + i];
        y[i] = from_float<T>((float)((q & 0x0F) - 8) * d);
        y[i + 16] = from_float<T>((float)((q >> 4) - 8) * d);
    }
}

// q4_1, 20 bytes: { f16 d; f16 m; u8 qs[16] } → q·d + m, low nibbles first
template <typename T>
__device__ __forceinline__ void decode_q4_1(const unsigned char* block, T* y) {
    const float d = half_at(block), m = half_at(block + 2);
    for (int i = 0; i < 16; i++) {
        const int q = block[4 + i];
        y[i] = from_float<T>((float)(q & 0x0F) * d + m);
        y[i + 16] = from_float<T>((float)(q >> 4) * d + m);
    }
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

// q4_K, 144 bytes: { f16 d; f16 dmin; u8 scales[12]; u8 qs[128] } → d·sc·q − dmin·m
template <typename T>
__device__ __forceinline__ void decode_q4_K(const unsigned char* block, T* y) {
    const float d = half_at(block), dmin = half_at(block + 2);
    const unsigned char* scales = block + 4;
    for (int j = 0; j < 4; j++) {
        int sc1, m1, sc2, m2;
        scale_min_k4(2 * j, scales, &sc1, &m1);
        scale_min_k4(2 * j + 1, scales, &sc2, &m2);
        const float d1 = d * (float)sc1, min1 = dmin * (float)m1;
        const float d2 = d * (float)sc2, min2 = dmin * (float)m2;
        const unsigned char* q = block + 16 + 32 * j;
        for (int l = 0; l < 32; l++) {
            y[64 * j + l] = from_float<T>(d1 * (float)(q[l] & 0x0F) - min1);
            y[64 * j + l + 32] = from_float<T>(d2 * (float)(q[l] >> 4) - min2);
        }
    }
}

// q6_K, 210 bytes: { u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d } → d·sc·(q − 32)
template <typename T>
__device__ __forceinline__ void decode_q6_K(const unsigned char* block, T* out) {
    const float d = half_at(block + 208);
    for (int half = 0; half < 2; half++) {
        const unsigned char* ql = block + 64 * half;
        const unsigned char* qh = block + 128 + 32 * half;
        const signed char* sc = (const signed char*)(block + 192 + 8 * half);
        T* y = out + 128 * half;
        for (int part = 0; part < 2; part++) {
            const float s1 = d * (float)sc[part], s2 = d * (float)sc[part + 2];
            const float s3 = d * (float)sc[part + 4], s4 = d * (float)sc[part + 6];
            for (int l = 16 * part; l < 16 * part + 16; l++) {
                const int low = ql[l], low32 = ql[l + 32], high = qh[l];
                y[l] = from_float<T>(s1 * (float)(((low & 0x0F) | ((high & 3) << 4)) - 32));
                y[l + 32] = from_float<T>(s2 * (float)(((low32 & 0x0F) | (((high >> 2) & 3) << 4)) - 32));
                y[l + 64] = from_float<T>(s3 * (float)(((low >> 4) | (((high >> 4) & 3) << 4)) - 32));
                y[l + 96] = from_float<T>(s4 * (float)(((low32 >> 4) | (((high >> 6) & 3) << 4)) - 32));
            }
        }
    }
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
