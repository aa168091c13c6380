// activations.cu: SiLU, ReLU, GELU (erf and tanh forms) and the gated pairs SwiGLU / GeGLU,
// forward and backward, as PyTorch defines them. Activation codes: 0 silu, 1 relu,
// 2 gelu_tanh, 3 gelu (erf). Grid-stride loops over n elements.
#include "common.cuh"

#define SQRT_2_OVER_PI 0.7978845608028654f
#define GELU_KAPPA 0.044715f

__device__ __forceinline__ float activation_apply(int activation, float x) {
    switch (activation) {
    case 0: return x / (1.f + expf(-x));
    case 1: return fmaxf(x, 0.f);
    case 2: return 0.5f * x * (1.f + tanhf(SQRT_2_OVER_PI * (x + GELU_KAPPA * x * x * x)));
    default: return 0.5f * x * (1.f + erff(x * 0.7071067811865476f));
    }
}

// The derivative of `activation_apply`:
// silu σ(x)·(1 + x·(1 − σ(x))); relu 1 where x > 0; gelu Φ(x) + x·φ(x);
// gelu_tanh ½(1 + tanh u) + ½x·(1 − tanh² u)·√(2/π)·(1 + 3κx²), u = √(2/π)(x + κx³).
__device__ __forceinline__ float activation_derivative(int activation, float x) {
    switch (activation) {
    case 0: {
        const float sigmoid = 1.f / (1.f + expf(-x));
        return sigmoid * (1.f + x * (1.f - sigmoid));
    }
    case 1: return x > 0.f ? 1.f : 0.f;
    case 2: {
        const float t = tanhf(SQRT_2_OVER_PI * (x + GELU_KAPPA * x * x * x));
        return 0.5f * (1.f + t) + 0.5f * x * (1.f - t * t) * SQRT_2_OVER_PI * (1.f + 3.f * GELU_KAPPA * x * x);
    }
    default: {
        const float cdf = 0.5f * (1.f + erff(x * 0.7071067811865476f));
        const float pdf = expf(-0.5f * x * x) * 0.3989422804014327f;
        return cdf + x * pdf;
    }
    }
}

// dx = dy · act'(x) (=): dx in f32 (may alias dy) or rounded once to a 16-bit O.
template <typename T, typename O>
__device__ __forceinline__ void activation_backward(O* dx, const float* dy, const T* x, long long n, int activation) {
    FRUGAL_GRID_STRIDE(i, n) dx[i] = from_float<O>(dy[i] * activation_derivative(activation, to_float(x[i])));
}

// dgate = dy·up·act'(gate), dup = dy·act(gate) (=): in f32 (each element is read before it is
// written, so they may alias dy) or rounded once to a 16-bit O.
template <typename T, typename O>
__device__ __forceinline__ void gated_backward(O* dgate, O* dup, const float* dy, const T* gate, const T* up, long long n,
                                               int activation) {
    FRUGAL_GRID_STRIDE(i, n) {
        const float g = to_float(gate[i]), u = to_float(up[i]), d = dy[i];
        dgate[i] = from_float<O>(d * u * activation_derivative(activation, g));
        dup[i] = from_float<O>(d * activation_apply(activation, g));
    }
}

#define ACTIVATIONS(suffix, T)                                                                                 \
    /* out = act(x) (=; out may alias x) */                                                                   \
    extern "C" __global__ void activation_forward_##suffix(T* out, const T* x, long long n, int activation) {  \
        FRUGAL_GRID_STRIDE(i, n) out[i] = from_float<T>(activation_apply(activation, to_float(x[i])));         \
    }                                                                                                          \
    extern "C" __global__ void activation_backward_##suffix(float* dx, const float* dy, const T* x, long long n, \
                                                            int activation) {                                  \
        activation_backward(dx, dy, x, n, activation);                                                         \
    }                                                                                                          \
    /* out = act(gate) · up (=; out may alias gate or up) */                                                  \
    extern "C" __global__ void gated_forward_##suffix(T* out, const T* gate, const T* up, long long n,         \
                                                      int activation) {                                        \
        FRUGAL_GRID_STRIDE(i, n)                                                                               \
            out[i] = from_float<T>(activation_apply(activation, to_float(gate[i])) * to_float(up[i]));         \
    }                                                                                                          \
    extern "C" __global__ void gated_backward_##suffix(float* dgate, float* dup, const float* dy, const T* gate, \
                                                       const T* up, long long n, int activation) {             \
        gated_backward(dgate, dup, dy, gate, up, n, activation);                                               \
    }
FRUGAL_DTYPES(ACTIVATIONS)

// The backward written in the 16-bit activations' dtype: the gradients a projection's 16-bit GEMMs
// read (`gradientOperandType`), spared the f32 copy and the pass that would round it.
#define ROUNDED_BACKWARD(suffix, T)                                                                            \
    extern "C" __global__ void activation_backward_##suffix##_rounded(T* dx, const float* dy, const T* x,      \
                                                                      long long n, int activation) {          \
        activation_backward(dx, dy, x, n, activation);                                                         \
    }                                                                                                          \
    extern "C" __global__ void gated_backward_##suffix##_rounded(T* dgate, T* dup, const float* dy, const T* gate, \
                                                                 const T* up, long long n, int activation) {   \
        gated_backward(dgate, dup, dy, gate, up, n, activation);                                               \
    }
ROUNDED_BACKWARD(f16, __half) ROUNDED_BACKWARD(bf16, __nv_bfloat16)
