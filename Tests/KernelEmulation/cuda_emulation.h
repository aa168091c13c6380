// cuda_emulation.h: enough of CUDA to run Frugal's kernels on the CPU, for checks on a machine
// without a GPU (KernelEmulationTests). Each block runs alone on one OS thread per CUDA thread:
// __syncthreads is a barrier of the block's threads, a warp's shuffles and tensor-core products
// are exchanges among its 32 threads, __shared__ variables are statics (one block at a time).
// It checks a kernel's indexing, masking and synchronization; speed and the GPU's own rounding
// of expf and friends are the GPU checks' business (scripts/gpu-check).
#pragma once
#define FRUGAL_EMULATION 1
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

// CUDA's 16-byte vector type, for kernels' vectorized stores.
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__
#define __shared__ static
#define __constant__

// One block's synchronization: the block's barrier, each warp's barrier and exchange slots, and
// the dynamic shared memory.
struct EmulatedBlock {
    std::barrier<> block;
    std::vector<std::unique_ptr<std::barrier<>>> warps;
    std::vector<std::vector<uint32_t>> slots;  // per warp: 32 lanes × 16 words
    std::vector<unsigned char> dynamicShared;
    EmulatedBlock(int threads, size_t shared) : block(threads), dynamicShared(shared) {
        const int count = (threads + 31) / 32;
        for (int w = 0; w < count; w++) {
            warps.push_back(std::make_unique<std::barrier<>>(std::min(32, threads - 32 * w)));
            slots.emplace_back(32 * 16);
        }
    }
};

inline thread_local EmulatedBlock* emulatedBlock = nullptr;
inline thread_local int emulatedThread = 0;

inline int emulatedLane() { return emulatedThread & 31; }
inline std::barrier<>& emulatedWarpBarrier() { return *emulatedBlock->warps[emulatedThread >> 5]; }
inline uint32_t* emulatedSlots(int lane) { return emulatedBlock->slots[emulatedThread >> 5].data() + 16 * lane; }

inline void __syncthreads() { emulatedBlock->block.arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emulatedWarpBarrier().arrive_and_wait(); }
inline void* emulatedDynamicShared() { return emulatedBlock->dynamicShared.data(); }

// A value from another lane of the warp: every lane posts its own, then reads `source`'s.
template <typename T> T emulatedExchange(T value, int source) {
    static_assert(sizeof(T) <= 64, "exchange of a value over 64 bytes");
    std::memcpy(emulatedSlots(emulatedLane()), &value, sizeof(T));
    __syncwarp();
    T result;
    std::memcpy(&result, emulatedSlots(source & 31), sizeof(T));
    __syncwarp();
    return result;
}
template <typename T> T __shfl_xor_sync(unsigned, T value, int mask) { return emulatedExchange(value, emulatedLane() ^ mask); }

// Runs `kernel(arguments...)` over the grid, a block at a time, on one OS thread per CUDA thread
// (the same threads for every block, which wait for each other between blocks).
template <typename Kernel, typename... Arguments>
void emulatedLaunch(dim3 grid, dim3 block, size_t sharedBytes, Kernel kernel, Arguments... arguments) {
    gridDim = grid;
    blockDim = block;
    const int threads = block.x * block.y * block.z;
    const long long blocks = (long long)grid.x * grid.y * grid.z;
    std::unique_ptr<EmulatedBlock> context;
    std::barrier<> pool(threads);
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; t++)
        workers.emplace_back([&, t] {
            emulatedThread = t;
            threadIdx = {unsigned(t % block.x), unsigned(t / block.x % block.y), unsigned(t / (block.x * block.y))};
            for (long long b = 0; b < blocks; b++) {
                if (t == 0) context = std::make_unique<EmulatedBlock>(threads, sharedBytes);
                pool.arrive_and_wait();
                emulatedBlock = context.get();
                blockIdx = {unsigned(b % grid.x), unsigned(b / grid.x % grid.y), unsigned(b / ((long long)grid.x * grid.y))};
                kernel(arguments...);
                // A finished thread no longer holds back its block's or its warp's barriers.
                emulatedWarpBarrier().arrive_and_drop();
                emulatedBlock->block.arrive_and_drop();
                pool.arrive_and_wait();
            }
        });
    for (auto& worker : workers) worker.join();
}

// Math as CUDA spells it.
template <typename A, typename B> auto min(A a, B b) -> std::common_type_t<A, B> { return a < b ? a : b; }
template <typename A, typename B> auto max(A a, B b) -> std::common_type_t<A, B> { return a < b ? b : a; }
inline float rsqrtf(float x) { return 1.f / std::sqrt(x); }
inline float __int_as_float(int bits) { float f; std::memcpy(&f, &bits, 4); return f; }
using std::isfinite;

// The warp's m16n8k16 product (tensor_core.cuh's fragment layout) on 16-bit T: every lane posts
// its fragments, then computes its four values of d += A·B from all of them.
template <typename T> void emulatedMMA(float* d, const uint32_t* a, const uint32_t* b) {
    auto widen = [](uint32_t word, int half) {
        const uint16_t bits = uint16_t(word >> (16 * half));
        T value;
        std::memcpy(&value, &bits, 2);
        return to_float(value);
    };
    uint32_t mine[6];
    std::memcpy(mine, a, 16);
    std::memcpy(mine + 4, b, 8);
    std::memcpy(emulatedSlots(emulatedLane()), mine, sizeof mine);
    __syncwarp();
    float A[16][16], B[16][8];
    for (int lane = 0; lane < 32; lane++) {
        uint32_t f[6];
        std::memcpy(f, emulatedSlots(lane), sizeof f);
        const int g = lane >> 2, t = lane & 3;
        for (int r = 0; r < 4; r++)
            for (int h = 0; h < 2; h++) A[g + 8 * (r & 1)][2 * t + h + 8 * (r >> 1)] = widen(f[r], h);
        for (int r = 0; r < 2; r++)
            for (int h = 0; h < 2; h++) B[2 * t + h + 8 * r][g] = widen(f[4 + r], h);
    }
    __syncwarp();
    const int g = emulatedLane() >> 2, t = emulatedLane() & 3;
    for (int e = 0; e < 4; e++) {
        const int row = g + 8 * (e >> 1), column = 2 * t + (e & 1);
        float sum = 0.f;
        for (int k = 0; k < 16; k++) sum += A[row][k] * B[k][column];
        d[e] += sum;
    }
}
