// tensor_core.cuh: the warp-wide m16n8k16 product on the tensor cores (PTX mma.sync, f32
// accumulation) and the 16-bit pairs its fragments hold. Fragment layout (PTX ISA, "Matrix
// Fragments for mma.m16n8k16"), with g = lane / 4 and t = lane % 4:
// - A (16 × 16, row-major), four 32-bit registers of two values: rows g, g + 8, g, g + 8 and
//   columns 2t, 2t + 1 (registers 0 and 1), then 2t + 8, 2t + 9 (registers 2 and 3);
// - B (16 × 8, column-major), two registers: rows (k) 2t, 2t + 1, then 2t + 8, 2t + 9; column g;
// - C and D (16 × 8, f32), four values: row g (values 0, 1), row g + 8 (values 2, 3), columns
//   2t and 2t + 1.
// The lower 16 bits of a register hold the value with the smaller index.
#pragma once
#include "common.cuh"

__device__ __forceinline__ unsigned short bits_of(__half x) { return __half_as_ushort(x); }
__device__ __forceinline__ unsigned short bits_of(__nv_bfloat16 x) { return __bfloat16_as_ushort(x); }

// Two f32 values rounded to T, as one register.
template <typename T> __device__ __forceinline__ unsigned pack_pair(float low, float high) {
    return (unsigned)bits_of(from_float<T>(low)) | ((unsigned)bits_of(from_float<T>(high)) << 16);
}

// Two adjacent 16-bit values (the first at an even index) as one register.
template <typename T> __device__ __forceinline__ unsigned load_pair(const T* p) { return *(const unsigned*)p; }

// Two 16-bit values from two places as one register.
template <typename T> __device__ __forceinline__ unsigned gather_pair(const T* low, const T* high) {
    return (unsigned)bits_of(*low) | ((unsigned)bits_of(*high) << 16);
}

// d (+=) a·b for the warp's fragments (every lane of the warp takes part).
#ifdef FRUGAL_EMULATION
template <typename T> inline void mma_16816(float* d, const unsigned* a, const unsigned* b) { emulatedMMA<T>(d, a, b); }
#else
template <typename T> __device__ __forceinline__ void mma_16816(float* d, const unsigned* a, const unsigned* b);
template <> __device__ __forceinline__ void mma_16816<__half>(float* d, const unsigned* a, const unsigned* b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <> __device__ __forceinline__ void mma_16816<__nv_bfloat16>(float* d, const unsigned* a, const unsigned* b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif

// Shared memory sized at launch, as T.
#ifdef FRUGAL_EMULATION
#define FRUGAL_DYNAMIC_SHARED(T, name) T* name = (T*)emulatedDynamicShared()
#else
#define FRUGAL_DYNAMIC_SHARED(T, name)                                  \
    extern __shared__ __align__(16) unsigned char frugal_dynamic_shared[]; \
    T* name = (T*)frugal_dynamic_shared
#endif
