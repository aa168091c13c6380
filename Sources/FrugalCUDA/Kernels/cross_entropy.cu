// cross_entropy.cu: softmax cross-entropy over one chunk of logits (the chunk's logits come from
// a cuBLASLt GEMM of the hidden rows with the head), and the loss total.
#include "common.cuh"

// Per row r of (rows, vocab) logits: losses[r] = log Σ exp(z − max) − (z_target − max) (=; 0 when
// the target is < 0); with write_gradient, the row is overwritten by
// (softmax(z) − onehot(target))·gradient_scale (zeros for an ignored row). Grid: one block per row.
extern "C" __global__ void cross_entropy_rows(float* logits, float* losses, const int* targets, int rows, int vocab,
                                              float gradient_scale, int write_gradient) {
    float* z = logits + (long long)blockIdx.x * vocab;
    const int target = targets[blockIdx.x];
    if (target < 0) {
        if (write_gradient)
            for (int j = threadIdx.x; j < vocab; j += blockDim.x) z[j] = 0.f;
        if (threadIdx.x == 0) losses[blockIdx.x] = 0.f;
        return;
    }
    float local_max = -FRUGAL_INFINITY;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) local_max = fmaxf(local_max, z[j]);
    const float maximum = block_max(local_max);
    double local_sum = 0.0;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) local_sum += (double)expf(z[j] - maximum);
    const double total = block_sum_double(local_sum);
    const float target_logit = z[target];  // read by every thread before any thread writes the gradient
    __syncthreads();
    if (threadIdx.x == 0) losses[blockIdx.x] = (float)(log(total) - (double)(target_logit - maximum));
    if (write_gradient) {
        const float k = (float)((double)gradient_scale / total);
        for (int j = threadIdx.x; j < vocab; j += blockDim.x)
            z[j] = expf(z[j] - maximum) * k - (j == target ? gradient_scale : 0.f);
    }
}

// total[0] += Σ losses (+=, double). One block.
extern "C" __global__ void cross_entropy_total(double* total, const float* losses, int rows) {
    double sum = 0.0;
    for (int r = threadIdx.x; r < rows; r += blockDim.x) sum += (double)losses[r];
    sum = block_sum_double(sum);
    if (threadIdx.x == 0) total[0] += sum;
}
