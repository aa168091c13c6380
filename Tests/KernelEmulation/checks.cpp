// checks.cpp: Frugal's CUDA kernels run on the CPU under cuda_emulation.h against plain C++
// references. Prints one line per check ("pass …" or "FAIL …") and exits with the number of
// failures. Built and run by KernelEmulationTests (clang++ -std=c++20).
#include "cuda_emulation.h"
#include "activations.cu"
#include "reduce.cu"
#include "rmsnorm.cu"
#include "layernorm.cu"
#include "attention_gemm.cu"
#include "flash_attention.cu"
#include "adamw.cu"
#include "adamw8bit.cu"
#include "dequantize.cu"

#include <cstdio>
#include <functional>
#include <random>
#include <string>

static int failures = 0;

static void report(const std::string& name, double error, double tolerance) {
    const bool pass = error <= tolerance;
    if (!pass) failures++;
    std::printf("%s %s: max error %.3g (tolerance %.3g)\n", pass ? "pass" : "FAIL", name.c_str(), error, tolerance);
}

static std::vector<float> random(size_t count, unsigned seed, float scale = 1.f) {
    std::mt19937 generator(seed);
    std::uniform_real_distribution<float> uniform(-scale, scale);
    std::vector<float> values(count);
    for (auto& v : values) v = uniform(generator);
    return values;
}

template <typename A, typename B> static double maxDifference(const A& a, const B& b) {
    double worst = 0;
    for (size_t i = 0; i < a.size(); i++) worst = std::max(worst, std::fabs(double(a[i]) - double(b[i])));
    return worst;
}

// The split column reductions as CUDABackend.reduceColumns launches them: each split's partial
// sums, then their total added in split order.
static void reduceColumns(std::function<void(dim3, std::vector<float*>, int)> kernel, int rows, int columns,
                          std::vector<float*> outputs) {
    const int splits = std::min(64, (rows + 127) / 128), perSplit = (rows + splits - 1) / splits;
    std::vector<std::vector<float>> partials(outputs.size(), std::vector<float>(splits * columns, NAN));
    std::vector<float*> buffers;
    for (size_t o = 0; o < outputs.size(); o++) buffers.push_back(outputs[o] ? partials[o].data() : nullptr);
    kernel(dim3{unsigned((columns + 31) / 32), unsigned(splits), 1}, buffers, perSplit);
    for (size_t o = 0; o < outputs.size(); o++)
        if (outputs[o]) emulatedLaunch({1, 1, 1}, {256, 1, 1}, 0, column_partials_add, outputs[o], (const float*)buffers[o], splits, columns);
}

static void checkColumnReductions() {
    for (int rows : {13, 1000}) {
        const int n = 200;
        auto x = random(rows * n, 1, 2.f), dy = random(rows * n, 2), start = random(n, 3), start2 = random(n, 4);
        std::vector<float> rstd(rows), mean(rows);
        for (int r = 0; r < rows; r++) { rstd[r] = 0.5f + r % 7 * 0.1f; mean[r] = 0.01f * (r % 11); }
        // column_sum: the bias gradient.
        std::vector<double> sum(n), sumW(n), sumRms(n);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < n; c++) {
                const double g = dy[r * n + c];
                sum[c] += g;
                sumW[c] += g * (x[r * n + c] - mean[r]) * rstd[r];
                sumRms[c] += g * x[r * n + c] * rstd[r];
            }
        auto bias = start;
        reduceColumns([&](dim3 grid, std::vector<float*> p, int perSplit) {
            emulatedLaunch(grid, {32, 8, 1}, 0, column_sum, p[0], (const float*)dy.data(), rows, n, perSplit);
        }, rows, n, {bias.data()});
        std::vector<double> expected(n);
        for (int c = 0; c < n; c++) expected[c] = start[c] + sum[c];
        report("column_sum over " + std::to_string(rows) + " rows", maxDifference(bias, expected), 1e-3);
        // rmsnorm_backward_weight.
        auto weight = start;
        reduceColumns([&](dim3 grid, std::vector<float*> p, int perSplit) {
            emulatedLaunch(grid, {32, 8, 1}, 0, rmsnorm_backward_weight_f32, p[0], (const float*)dy.data(), (const float*)x.data(),
                           (const float*)rstd.data(), rows, n, perSplit);
        }, rows, n, {weight.data()});
        for (int c = 0; c < n; c++) expected[c] = start[c] + sumRms[c];
        report("rmsnorm_backward_weight over " + std::to_string(rows) + " rows", maxDifference(weight, expected), 1e-3);
        // layernorm_backward_parameters, with and without the bias.
        for (bool withBias : {true, false}) {
            auto w = start, b = start2;
            reduceColumns([&](dim3 grid, std::vector<float*> p, int perSplit) {
                emulatedLaunch(grid, {32, 8, 1}, 0, layernorm_backward_parameters_f32, p[0], p[1], (const float*)dy.data(),
                               (const float*)x.data(), (const float*)mean.data(), (const float*)rstd.data(), rows, n, perSplit);
            }, rows, n, {w.data(), withBias ? b.data() : nullptr});
            std::vector<double> expectedW(n), expectedB(n);
            for (int c = 0; c < n; c++) { expectedW[c] = start[c] + sumW[c]; expectedB[c] = withBias ? start2[c] + sum[c] : start2[c]; }
            report(std::string("layernorm_backward_parameters ") + (withBias ? "(weight, bias)" : "(weight alone)") + " over "
                       + std::to_string(rows) + " rows",
                   std::max(maxDifference(w, expectedW), maxDifference(b, expectedB)), 1e-3);
        }
    }
}

// sum_squares_chunks and sum_partials_ranges over several tensors, chunked as sumsOfSquares does.
static void checkSumsOfSquares() {
    const int chunk = 1 << 16;
    std::vector<std::vector<float>> tensors;
    for (int size : {70000, 37, 65536, 65537, 200000}) tensors.push_back(random(size, size));
    std::vector<unsigned long long> table;  // per chunk: address, count
    std::vector<int> offsets{0};
    for (auto& t : tensors) {
        for (size_t first = 0; first < t.size(); first += chunk)
            table.insert(table.end(), {(unsigned long long)(t.data() + first), (unsigned long long)std::min<size_t>(chunk, t.size() - first)});
        offsets.push_back(int(table.size() / 2));
    }
    std::vector<double> partials(table.size() / 2), totals(tensors.size());
    emulatedLaunch({unsigned(partials.size()), 1, 1}, {256, 1, 1}, 0, sum_squares_chunks, partials.data(),
                   (const unsigned long long*)table.data());
    emulatedLaunch({unsigned(tensors.size()), 1, 1}, {256, 1, 1}, 0, sum_partials_ranges, totals.data(),
                   (const double*)partials.data(), (const int*)offsets.data());
    double error = 0;
    for (size_t t = 0; t < tensors.size(); t++) {
        double expected = 0;
        for (float v : tensors[t]) expected += double(v) * v;
        error = std::max(error, std::fabs(totals[t] - expected) / expected);
    }
    report("sum_squares_chunks + sum_partials_ranges, 5 tensors (relative)", error, 1e-12);
}

// The masked softmax and its gradient a query block at a time equal the whole-sequence call on
// the block's rows and visible keys, bit for bit (CUDAAttentionGEMM's query blocks).
static void checkAttentionQueryBlocks() {
    const int batch = 2, heads = 3, lq = 300, lk = 330, qOffset = 20, pairs = batch * heads, blockSize = 130;
    std::vector<int> segments(batch * lk);
    for (int b = 0; b < batch; b++)
        for (int j = 0; j < lk; j++) segments[b * lk + j] = b == 0 ? 0 : j < 140 ? 0 : j < 310 ? 1 : -1;
    auto scores = random(size_t(pairs) * lq * lk, 5, 3.f), dP = random(size_t(pairs) * lq * lk, 6);
    auto delta = random(pairs * lq, 7);
    // The whole sequence at once.
    std::vector<float> probabilities(scores.size()), lse(pairs * lq), bwdP(scores.size()), dS(scores.size());
    emulatedLaunch({unsigned((pairs * lq + 7) / 8), 1, 1}, {256, 1, 1}, 0, attention_softmax_f32, probabilities.data(), lse.data(),
                   (const float*)scores.data(), (const int*)segments.data(), pairs, 0, heads, lq, lk, qOffset, lq, lk);
    emulatedLaunch({64, 1, 1}, {256, 1, 1}, 0, attention_softmax_backward_f32, bwdP.data(), dS.data(), (const float*)scores.data(),
                   (const float*)dP.data(), (const float*)lse.data(), (const float*)delta.data(), (const int*)segments.data(), pairs, 0,
                   heads, lq, lk, qOffset, lq, lk);
    double error = 0, masked = 0;
    std::vector<float> blockLse(pairs * lq, NAN);
    for (int first = 0; first < lq; first += blockSize) {
        const int count = std::min(blockSize, lq - first), keys = std::min(lk, qOffset + first + count);
        std::vector<float> s(size_t(pairs) * count * keys), d(s.size()), p(s.size()), p2(s.size()), ds(s.size());
        for (int pair = 0; pair < pairs; pair++)
            for (int i = 0; i < count; i++)
                for (int j = 0; j < keys; j++) {
                    const size_t from = (size_t(pair) * lq + first + i) * lk + j, to = (size_t(pair) * count + i) * keys + j;
                    s[to] = scores[from];
                    d[to] = dP[from];
                }
        emulatedLaunch({unsigned((pairs * count + 7) / 8), 1, 1}, {256, 1, 1}, 0, attention_softmax_f32, p.data(),
                       blockLse.data() + first, (const float*)s.data(), (const int*)segments.data(), pairs, 0, heads, count, keys,
                       qOffset + first, lq, lk);
        emulatedLaunch({64, 1, 1}, {256, 1, 1}, 0, attention_softmax_backward_f32, p2.data(), ds.data(), (const float*)s.data(),
                       (const float*)d.data(), (const float*)lse.data() + first, (const float*)delta.data() + first,
                       (const int*)segments.data(), pairs, 0, heads, count, keys, qOffset + first, lq, lk);
        for (int pair = 0; pair < pairs; pair++)
            for (int i = 0; i < count; i++)
                for (int j = 0; j < lk; j++) {
                    const size_t whole = (size_t(pair) * lq + first + i) * lk + j, part = (size_t(pair) * count + i) * keys + j;
                    if (j >= keys) { masked = std::max({masked, (double)std::fabs(probabilities[whole]), (double)std::fabs(dS[whole])}); continue; }
                    const double e1 = std::fabs(probabilities[whole] - p[part]), e2 = std::fabs(bwdP[whole] - p2[part]), e3 = std::fabs(dS[whole] - ds[part]);
                    error = std::max({error, e1, e2, e3});
                }
    }
    report("attention softmax and its gradient by query blocks against whole sequences", std::max(error, maxDifference(blockLse, lse)), 0);
    report("attention softmax: keys past a block's last query are masked", masked, 0);
}

// An attention case: shapes, visibility and inputs (rounded to T where the kernels store T).
struct AttentionCase {
    std::string name;
    int batch, lq, lk, qOffset, heads, kvHeads, d;
    std::vector<int> segments;  // (batch, lk), or empty
    float scale() const { return 1.f / std::sqrt(float(d)); }
    bool visible(int b, int i, int j) const {
        if (j > qOffset + i || j >= lk) return false;
        return segments.empty() || segments[b * lk + j] == segments[b * lk + qOffset + i];
    }
};

static std::vector<AttentionCase> attentionCases() {
    std::vector<int> packed(2 * 150);
    for (int b = 0; b < 2; b++)
        for (int j = 0; j < 150; j++) packed[b * 150 + j] = b == 0 ? 0 : j < 40 ? 0 : j < 140 ? 1 : -1;
    return {{"GQA 4/2, d 64, 150 tokens, packed segments and padding", 2, 150, 150, 0, 4, 2, 64, packed},
            {"MQA 2/1, d 128, cache offset 20, 70 queries of 90 keys", 1, 70, 90, 20, 2, 1, 128, {}},
            {"MHA, d 64, 64 tokens (one tile)", 1, 64, 64, 0, 2, 2, 64, {}},
            {"MHA, d 96 (Phi-3), 100 tokens", 1, 100, 100, 0, 2, 2, 96, {}}};
}

// Reference attention in double from the stored inputs: out and lse.
static void referenceAttention(const AttentionCase& c, const std::vector<float>& q, const std::vector<float>& k,
                               const std::vector<float>& v, std::vector<double>& out, std::vector<double>& lse) {
    out.assign(size_t(c.batch) * c.lq * c.heads * c.d, 0);
    lse.assign(size_t(c.batch) * c.heads * c.lq, -INFINITY);
    for (int b = 0; b < c.batch; b++)
        for (int h = 0; h < c.heads; h++) {
            const int kh = h / (c.heads / c.kvHeads);
            for (int i = 0; i < c.lq; i++) {
                std::vector<double> scores(c.lk, -INFINITY);
                double top = -INFINITY;
                for (int j = 0; j < c.lk; j++) {
                    if (!c.visible(b, i, j)) continue;
                    double dot = 0;
                    for (int e = 0; e < c.d; e++)
                        dot += double(q[((size_t(b) * c.lq + i) * c.heads + h) * c.d + e]) * k[((size_t(b) * c.lk + j) * c.kvHeads + kh) * c.d + e];
                    scores[j] = dot * c.scale();
                    top = std::max(top, scores[j]);
                }
                if (top == -INFINITY) continue;
                double sum = 0;
                for (int j = 0; j < c.lk; j++) sum += scores[j] == -INFINITY ? 0 : std::exp(scores[j] - top);
                lse[(size_t(b) * c.heads + h) * c.lq + i] = top + std::log(sum);
                for (int j = 0; j < c.lk; j++) {
                    if (scores[j] == -INFINITY) continue;
                    const double p = std::exp(scores[j] - top) / sum;
                    for (int e = 0; e < c.d; e++)
                        out[((size_t(b) * c.lq + i) * c.heads + h) * c.d + e] += p * v[((size_t(b) * c.lk + j) * c.kvHeads + kh) * c.d + e];
                }
            }
        }
}

template <typename T> static std::vector<T> stored(const std::vector<float>& values) {
    std::vector<T> result(values.size());
    for (size_t i = 0; i < values.size(); i++) result[i] = from_float<T>(values[i]);
    return result;
}
template <typename T> static std::vector<float> widened(const std::vector<T>& values) {
    std::vector<float> result(values.size());
    for (size_t i = 0; i < values.size(); i++) result[i] = to_float(values[i]);
    return result;
}

template <typename T, int D, typename Kernel>
static void checkFlashForward(const AttentionCase& c, const char* type, Kernel kernel) {
    auto q = stored<T>(random(size_t(c.batch) * c.lq * c.heads * D, 11, 1.5f));
    auto k = stored<T>(random(size_t(c.batch) * c.lk * c.kvHeads * D, 12, 1.5f));
    auto v = stored<T>(random(size_t(c.batch) * c.lk * c.kvHeads * D, 13));
    std::vector<T> out(q.size());
    std::vector<float> lse(size_t(c.batch) * c.heads * c.lq, NAN);
    emulatedLaunch({unsigned((c.lq + 63) / 64), unsigned(c.batch * c.heads), 1}, {128, 1, 1}, 2 * 64 * (D + 8) * sizeof(T), kernel,
                   out.data(), lse.data(), (const T*)q.data(), (const T*)k.data(), (const T*)v.data(),
                   c.segments.empty() ? (const int*)nullptr : c.segments.data(), c.lq, c.lk, c.qOffset, c.heads, c.kvHeads, c.scale());
    std::vector<double> expectedOut, expectedLse;
    referenceAttention(c, widened(q), widened(k), widened(v), expectedOut, expectedLse);
    double lseError = 0;
    for (size_t i = 0; i < lse.size(); i++)
        lseError = std::max(lseError, std::isinf(expectedLse[i]) ? (lse[i] == expectedLse[i] ? 0. : INFINITY) : std::fabs(lse[i] - expectedLse[i]));
    report(std::string("flash_attention_forward ") + type + ", " + c.name + ": out", maxDifference(widened(out), expectedOut), 2e-2);
    report(std::string("flash_attention_forward ") + type + ", " + c.name + ": lse", lseError, 1e-4);
}

// Reference gradients in double: dq, dk, dv of out = softmax(scale·q·kᵀ)·v against dOut.
static void referenceAttentionBackward(const AttentionCase& c, const std::vector<float>& q, const std::vector<float>& k,
                                       const std::vector<float>& v, const std::vector<float>& dOut, std::vector<double>& dq,
                                       std::vector<double>& dk, std::vector<double>& dv) {
    std::vector<double> out, lse;
    referenceAttention(c, q, k, v, out, lse);
    dq.assign(q.size(), 0);
    dk.assign(k.size(), 0);
    dv.assign(v.size(), 0);
    auto Q = [&](int b, int i, int h, int e) { return double(q[((size_t(b) * c.lq + i) * c.heads + h) * c.d + e]); };
    auto G = [&](int b, int i, int h, int e) { return double(dOut[((size_t(b) * c.lq + i) * c.heads + h) * c.d + e]); };
    auto at = [&](int b, int j, int kh) { return ((size_t(b) * c.lk + j) * c.kvHeads + kh) * c.d; };
    for (int b = 0; b < c.batch; b++)
        for (int h = 0; h < c.heads; h++) {
            const int kh = h / (c.heads / c.kvHeads);
            for (int i = 0; i < c.lq; i++) {
                const double m = lse[(size_t(b) * c.heads + h) * c.lq + i];
                if (m == -INFINITY) continue;
                double delta = 0;
                for (int e = 0; e < c.d; e++) delta += G(b, i, h, e) * out[((size_t(b) * c.lq + i) * c.heads + h) * c.d + e];
                for (int j = 0; j < c.lk; j++) {
                    if (!c.visible(b, i, j)) continue;
                    double dot = 0, dp = 0;
                    for (int e = 0; e < c.d; e++) {
                        dot += Q(b, i, h, e) * k[at(b, j, kh) + e];
                        dp += G(b, i, h, e) * v[at(b, j, kh) + e];
                    }
                    const double p = std::exp(dot * c.scale() - m), ds = p * (dp - delta);
                    for (int e = 0; e < c.d; e++) {
                        dq[((size_t(b) * c.lq + i) * c.heads + h) * c.d + e] += c.scale() * ds * k[at(b, j, kh) + e];
                        dk[at(b, j, kh) + e] += c.scale() * ds * Q(b, i, h, e);
                        dv[at(b, j, kh) + e] += p * G(b, i, h, e);
                    }
                }
            }
        }
}

template <typename A, typename B> static double relativeError(const A& value, const B& expected) {
    double scale = 0;
    for (auto x : expected) scale = std::max(scale, std::fabs(double(x)));
    return maxDifference(value, expected) / std::max(scale, 1e-30);
}

template <typename T, int D, typename Forward, typename Query, typename Key>
static void checkFlashBackward(const AttentionCase& c, const char* type, Forward forward, Query query, Key key) {
    auto q = stored<T>(random(size_t(c.batch) * c.lq * c.heads * D, 21, 1.5f));
    auto k = stored<T>(random(size_t(c.batch) * c.lk * c.kvHeads * D, 22, 1.5f));
    auto v = stored<T>(random(size_t(c.batch) * c.lk * c.kvHeads * D, 23));
    auto dOut = random(q.size(), 24);
    const int* segments = c.segments.empty() ? nullptr : c.segments.data();
    std::vector<T> out(q.size());
    std::vector<float> lse(size_t(c.batch) * c.heads * c.lq), delta(lse.size());
    emulatedLaunch({unsigned((c.lq + 63) / 64), unsigned(c.batch * c.heads), 1}, {128, 1, 1}, 2 * 64 * (D + 8) * sizeof(T), forward,
                   out.data(), lse.data(), (const T*)q.data(), (const T*)k.data(), (const T*)v.data(), segments, c.lq, c.lk, c.qOffset,
                   c.heads, c.kvHeads, c.scale());
    // delta = Σ dOut·out per row, as attention_delta computes it from the stored output.
    for (int b = 0; b < c.batch; b++)
        for (int i = 0; i < c.lq; i++)
            for (int h = 0; h < c.heads; h++) {
                float sum = 0;
                for (int e = 0; e < D; e++) {
                    const size_t at = ((size_t(b) * c.lq + i) * c.heads + h) * D + e;
                    sum += dOut[at] * to_float(out[at]);
                }
                delta[(size_t(b) * c.heads + h) * c.lq + i] = sum;
            }
    std::vector<float> dq(q.size(), NAN), dk(k.size(), NAN), dv(v.size(), NAN);
    emulatedLaunch({unsigned((c.lq + 63) / 64), unsigned(c.batch * c.heads), 1}, {128, 1, 1}, 2 * 64 * (D + 8) * sizeof(T), query,
                   dq.data(), (const T*)q.data(), (const T*)k.data(), (const T*)v.data(), (const float*)dOut.data(),
                   (const float*)lse.data(), (const float*)delta.data(), segments, c.lq, c.lk, c.qOffset, c.heads, c.kvHeads, c.scale());
    emulatedLaunch({unsigned((c.lk + 63) / 64), unsigned(c.batch * c.kvHeads), 1}, {128, 1, 1},
                   4 * 64 * (D + 8) * sizeof(T) + 2 * 64 * sizeof(float), key, dk.data(), dv.data(), (const T*)q.data(),
                   (const T*)k.data(), (const T*)v.data(), (const float*)dOut.data(), (const float*)lse.data(), (const float*)delta.data(),
                   segments, c.lq, c.lk, c.qOffset, c.heads, c.kvHeads, c.scale());
    std::vector<double> expectedQ, expectedK, expectedV;
    referenceAttentionBackward(c, widened(q), widened(k), widened(v), dOut, expectedQ, expectedK, expectedV);
    const std::string name = std::string("flash_attention_backward ") + type + ", " + c.name;
    report(name + ": dq (relative to its largest)", relativeError(dq, expectedQ), 3e-2);
    report(name + ": dk (relative to its largest)", relativeError(dk, expectedK), 3e-2);
    report(name + ": dv (relative to its largest)", relativeError(dv, expectedV), 3e-2);
}

static void checkFlashAttention() {
    for (const auto& c : attentionCases()) {
        if (c.d == 64) {
            checkFlashForward<__nv_bfloat16, 64>(c, "bf16", flash_attention_forward_bf16_d64);
            checkFlashForward<__half, 64>(c, "f16", flash_attention_forward_f16_d64);
            checkFlashBackward<__nv_bfloat16, 64>(c, "bf16", flash_attention_forward_bf16_d64, flash_attention_backward_query_bf16_d64,
                                                  flash_attention_backward_key_bf16_d64);
            checkFlashBackward<__half, 64>(c, "f16", flash_attention_forward_f16_d64, flash_attention_backward_query_f16_d64,
                                           flash_attention_backward_key_f16_d64);
        } else if (c.d == 96) {
            checkFlashForward<__nv_bfloat16, 96>(c, "bf16", flash_attention_forward_bf16_d96);
            checkFlashBackward<__nv_bfloat16, 96>(c, "bf16", flash_attention_forward_bf16_d96, flash_attention_backward_query_bf16_d96,
                                                  flash_attention_backward_key_bf16_d96);
        } else {
            checkFlashForward<__nv_bfloat16, 128>(c, "bf16", flash_attention_forward_bf16_d128);
            checkFlashForward<__half, 128>(c, "f16", flash_attention_forward_f16_d128);
            checkFlashBackward<__nv_bfloat16, 128>(c, "bf16", flash_attention_forward_bf16_d128,
                                                   flash_attention_backward_query_bf16_d128, flash_attention_backward_key_bf16_d128);
            checkFlashBackward<__half, 128>(c, "f16", flash_attention_forward_f16_d128, flash_attention_backward_query_f16_d128,
                                            flash_attention_backward_key_f16_d128);
        }
    }
}

// The multi-tensor AdamW and zero (a block per chunk of 65,536 values) equal the per-tensor
// kernels bit for bit: masters with bf16 copies, and bf16 parameters stepped in place.
static void checkMultiTensorOptimizer() {
    const int chunk = 1 << 16;
    const std::vector<int> sizes{70000, 37, 65536, 131073};
    const float beta1 = 0.9f, beta2 = 0.999f, epsilon = 1e-8f, decay = 1 - 1e-5f, stepSize = 1e-3f / 0.1f, correction2 = 0.0447f;
    double error = 0, parameterError = 0, zeroed = 0;
    std::vector<std::vector<float>> p1, p2, m1, m2, v1, v2, g;
    std::vector<std::vector<__nv_bfloat16>> s1, s2, b1, b2;
    std::vector<unsigned long long> table, parameterTable, zeroTable;
    for (size_t t = 0; t < sizes.size(); t++) {
        const int n = sizes[t];
        p1.push_back(random(n, 30 + t)); m1.push_back(random(n, 40 + t, 0.1f)); v1.push_back(random(n, 50 + t, 0.01f));
        for (auto& x : v1.back()) x = std::fabs(x);
        g.push_back(random(n, 60 + t));
        p2.push_back(p1.back()); m2.push_back(m1.back()); v2.push_back(v1.back());
        s1.emplace_back(n); s2.emplace_back(n);
        b1.push_back(stored<__nv_bfloat16>(p1.back())); b2.push_back(b1.back());
    }
    for (size_t t = 0; t < sizes.size(); t++) {
        const int n = sizes[t];
        emulatedLaunch({4, 1, 1}, {256, 1, 1}, 0, adamw_bf16, p1[t].data(), m1[t].data(), v1[t].data(), s1[t].data(),
                       (const float*)g[t].data(), (long long)n, beta1, beta2, epsilon, decay, stepSize, correction2);
        for (int first = 0; first < n; first += chunk) {
            const unsigned long long count = std::min(chunk, n - first);
            table.insert(table.end(), {(unsigned long long)(p2[t].data() + first), (unsigned long long)(m2[t].data() + first),
                                       (unsigned long long)(v2[t].data() + first), (unsigned long long)(s2[t].data() + first),
                                       (unsigned long long)(g[t].data() + first), count});
            zeroTable.insert(zeroTable.end(), {(unsigned long long)(m1[t].data() + first), count});
        }
    }
    emulatedLaunch({unsigned(table.size() / 6), 1, 1}, {256, 1, 1}, 0, adamw_chunks_bf16, (const unsigned long long*)table.data(), beta1,
                   beta2, epsilon, decay, stepSize, correction2);
    for (size_t t = 0; t < sizes.size(); t++)
        for (int i = 0; i < sizes[t]; i++)
            error = std::max({error, (double)std::fabs(p1[t][i] - p2[t][i]), (double)std::fabs(m1[t][i] - m2[t][i]),
                              (double)std::fabs(v1[t][i] - v2[t][i]), (double)std::fabs(to_float(s1[t][i]) - to_float(s2[t][i]))});
    report("adamw_chunks_bf16 against adamw_bf16 tensor by tensor", error, 0);
    // bf16 parameters stepped in place, from the moments already stepped once.
    for (size_t t = 0; t < sizes.size(); t++) {
        const int n = sizes[t];
        m2[t] = m1[t]; v2[t] = v1[t];
        emulatedLaunch({4, 1, 1}, {256, 1, 1}, 0, adamw_parameter_bf16, b1[t].data(), m1[t].data(), v1[t].data(),
                       (const float*)g[t].data(), (long long)n, beta1, beta2, epsilon, decay, stepSize, correction2);
        for (int first = 0; first < n; first += chunk)
            parameterTable.insert(parameterTable.end(), {(unsigned long long)(b2[t].data() + first), (unsigned long long)(m2[t].data() + first),
                                                         (unsigned long long)(v2[t].data() + first), 0ull,
                                                         (unsigned long long)(g[t].data() + first),
                                                         (unsigned long long)std::min(chunk, n - first)});
    }
    emulatedLaunch({unsigned(parameterTable.size() / 6), 1, 1}, {256, 1, 1}, 0, adamw_parameter_chunks_bf16,
                   (const unsigned long long*)parameterTable.data(), beta1, beta2, epsilon, decay, stepSize, correction2);
    for (size_t t = 0; t < sizes.size(); t++)
        for (int i = 0; i < sizes[t]; i++)
            parameterError = std::max({parameterError, (double)std::fabs(to_float(b1[t][i]) - to_float(b2[t][i])),
                                       (double)std::fabs(m1[t][i] - m2[t][i]), (double)std::fabs(v1[t][i] - v2[t][i])});
    report("adamw_parameter_chunks_bf16 against adamw_parameter_bf16 tensor by tensor", parameterError, 0);
    emulatedLaunch({unsigned(zeroTable.size() / 2), 1, 1}, {256, 1, 1}, 0, zero_chunks, (const unsigned long long*)zeroTable.data());
    for (auto& m : m1)
        for (float x : m) zeroed = std::max(zeroed, (double)std::fabs(x));
    report("zero_chunks over 4 tensors", zeroed, 0);
}

// nf4 decoded four bytes of codes per thread (dequantize_nf4*) equals decode_nf4's block-at-a-time
// arithmetic bit for bit, to f32 and rounded to bf16, with vector stores and, into an output 2
// bytes past a 16-byte boundary, value by value.
static void checkNF4Decoding() {
    const int blocks = 37;
    std::mt19937 generator(70);
    std::vector<unsigned char> data(size_t(blocks) * 134);
    for (auto& byte : data) byte = (unsigned char)(generator() & 0xFF);
    for (int b = 0; b < blocks; b++) {  // a finite f16 scale: exponent bits below all-ones
        data[b * 134 + 1] &= 0x3F;
    }
    std::vector<float> out(size_t(blocks) * 256), expected(out.size());
    std::vector<__nv_bfloat16> out16(out.size()), expected16(out.size());
    emulatedLaunch({3, 1, 1}, {256, 1, 1}, 0, dequantize_nf4, out.data(), (const unsigned char*)data.data(), (long long)blocks);
    emulatedLaunch({3, 1, 1}, {256, 1, 1}, 0, dequantize_nf4_to_bf16, out16.data(), (const unsigned char*)data.data(), (long long)blocks);
    for (int b = 0; b < blocks; b++) {
        decode_nf4(data.data() + b * 134, expected.data() + b * 256);
        decode_nf4(data.data() + b * 134, expected16.data() + b * 256);
    }
    std::vector<__nv_bfloat16> shifted(out.size() + 8);
    emulatedLaunch({3, 1, 1}, {256, 1, 1}, 0, dequantize_nf4_to_bf16, shifted.data() + 1, (const unsigned char*)data.data(),
                   (long long)blocks);
    double error = 0;
    for (size_t i = 0; i < out.size(); i++)
        error = std::max({error, (double)std::fabs(out[i] - expected[i]), (double)std::fabs(to_float(out16[i]) - to_float(expected16[i])),
                          (double)std::fabs(to_float(shifted[i + 1]) - to_float(expected16[i]))});
    report("dequantize_nf4 (four bytes per thread) against decode_nf4, f32 and bf16, aligned and not", error, 0);
}

// The activations' backward written in 16 bits (the `_rounded` kernels, for the GEMMs' operands)
// equals the f32 kernels' gradients rounded to nearest even, bit for bit, for every activation.
static void checkRoundedActivationBackward() {
    const long long n = 3000;
    const auto gate32 = random(n, 71, 4.f), up32 = random(n, 72), dy = random(n, 73);
    std::vector<__nv_bfloat16> gate(n), up(n);
    for (long long i = 0; i < n; i++) gate[i] = __float2bfloat16_rn(gate32[i]), up[i] = __float2bfloat16_rn(up32[i]);
    double mismatches = 0;
    for (int activation = 0; activation < 4; activation++) {
        std::vector<float> dgate(n), dup(n), dx(n);
        std::vector<__nv_bfloat16> dgate16(n), dup16(n), dx16(n);
        emulatedLaunch({4, 1, 1}, {256, 1, 1}, 0, gated_backward_bf16, dgate.data(), dup.data(), dy.data(),
                       (const __nv_bfloat16*)gate.data(), (const __nv_bfloat16*)up.data(), n, activation);
        emulatedLaunch({4, 1, 1}, {256, 1, 1}, 0, gated_backward_bf16_rounded, dgate16.data(), dup16.data(), dy.data(),
                       (const __nv_bfloat16*)gate.data(), (const __nv_bfloat16*)up.data(), n, activation);
        emulatedLaunch({4, 1, 1}, {256, 1, 1}, 0, activation_backward_bf16, dx.data(), dy.data(),
                       (const __nv_bfloat16*)gate.data(), n, activation);
        emulatedLaunch({4, 1, 1}, {256, 1, 1}, 0, activation_backward_bf16_rounded, dx16.data(), dy.data(),
                       (const __nv_bfloat16*)gate.data(), n, activation);
        for (long long i = 0; i < n; i++) {
            const auto same = [](__nv_bfloat16 a, float b) { return to_float(a) == to_float(__float2bfloat16_rn(b)); };
            mismatches += !same(dgate16[i], dgate[i]) + !same(dup16[i], dup[i]) + !same(dx16[i], dx[i]);
        }
    }
    report("gated_backward and activation_backward into bf16 against the f32 gradients rounded", mismatches, 0);
}

// GGUF's block layouts decoded a block at a time in plain C++, as ggml's dequantize_row_* do: the
// references of the per-value kernels.
namespace gguf_reference {
static float f16(const unsigned char* p) { return __half2float(__ushort_as_half((unsigned short)(p[0] | (p[1] << 8)))); }

static void q8_0(const unsigned char* b, float* y) {
    for (int i = 0; i < 32; i++) y[i] = (float)(signed char)b[2 + i] * f16(b);
}
static void q4_0(const unsigned char* b, float* y) {
    for (int i = 0; i < 16; i++) {
        y[i] = (float)((b[2 + i] & 0x0F) - 8) * f16(b);
        y[i + 16] = (float)((b[2 + i] >> 4) - 8) * f16(b);
    }
}
static void q4_1(const unsigned char* b, float* y) {
    for (int i = 0; i < 16; i++) {
        y[i] = (float)(b[4 + i] & 0x0F) * f16(b) + f16(b + 2);
        y[i + 16] = (float)(b[4 + i] >> 4) * f16(b) + f16(b + 2);
    }
}
static void q4_K(const unsigned char* b, float* y) {
    const unsigned char* scales = b + 4;
    for (int j = 0; j < 8; j++) {
        int sc, m;
        if (j < 4) { sc = scales[j] & 63; m = scales[j + 4] & 63; }
        else { sc = (scales[j + 4] & 0x0F) | ((scales[j - 4] >> 6) << 4); m = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4); }
        const float d = f16(b) * (float)sc, min = f16(b + 2) * (float)m;
        const unsigned char* q = b + 16 + 32 * (j / 2);
        for (int l = 0; l < 32; l++) y[32 * j + l] = d * (float)(j % 2 == 0 ? q[l] & 0x0F : q[l] >> 4) - min;
    }
}
static void q6_K(const unsigned char* b, float* y) {
    for (int half = 0; half < 2; half++) {
        const unsigned char *ql = b + 64 * half, *qh = b + 128 + 32 * half;
        const signed char* sc = (const signed char*)(b + 192 + 8 * half);
        for (int l = 0; l < 32; l++) {
            const int is = l / 16;
            const int q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) - 32, q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32, q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[128 * half + l] = f16(b + 208) * (float)sc[is] * (float)q1;
            y[128 * half + l + 32] = f16(b + 208) * (float)sc[is + 2] * (float)q2;
            y[128 * half + l + 64] = f16(b + 208) * (float)sc[is + 4] * (float)q3;
            y[128 * half + l + 96] = f16(b + 208) * (float)sc[is + 6] * (float)q4;
        }
    }
}
}  // namespace gguf_reference

// Each GGUF type decoded a value per thread (dequantize_<type>, _to_bf16) equals the block-at-a-time
// reference, bit for bit, to f32 and rounded to bf16; and so does decode_<type> (embedding.cu's).
template <typename Kernel, typename Kernel16>
static void checkGGUFDecoding(const char* name, int values, int bytes, std::vector<int> halfFields,
                              void (*reference)(const unsigned char*, float*), Kernel kernel, Kernel16 kernel16,
                              void (*block)(const unsigned char*, float*)) {
    const int blocks = 23;
    std::mt19937 generator(71);
    std::vector<unsigned char> data(size_t(blocks) * bytes);
    for (auto& byte : data) byte = (unsigned char)(generator() & 0xFF);
    for (int b = 0; b < blocks; b++)
        for (int field : halfFields) data[size_t(b) * bytes + field + 1] &= 0x3F;  // finite f16 scales
    std::vector<float> out(size_t(blocks) * values), expected(out.size()), decoded(out.size());
    std::vector<__nv_bfloat16> out16(out.size());
    emulatedLaunch({2, 1, 1}, {256, 1, 1}, 0, kernel, out.data(), (const unsigned char*)data.data(), (long long)blocks);
    emulatedLaunch({2, 1, 1}, {256, 1, 1}, 0, kernel16, out16.data(), (const unsigned char*)data.data(), (long long)blocks);
    for (int b = 0; b < blocks; b++) {
        reference(data.data() + size_t(b) * bytes, expected.data() + size_t(b) * values);
        block(data.data() + size_t(b) * bytes, decoded.data() + size_t(b) * values);
    }
    double error = 0;
    for (size_t i = 0; i < out.size(); i++) {
        const float rounded = __bfloat162float(__float2bfloat16_rn(expected[i]));
        error = std::max({error, (double)std::fabs(out[i] - expected[i]), (double)std::fabs(decoded[i] - expected[i]),
                          (double)std::fabs(to_float(out16[i]) - rounded)});
    }
    report((std::string("dequantize_") + name + " (a value per thread) and decode_" + name + " against the block reference, f32 and bf16").c_str(),
           error, 0);
}

static void checkGGUFDecodings() {
    checkGGUFDecoding("q8_0", 32, 34, {0}, gguf_reference::q8_0, dequantize_q8_0, dequantize_q8_0_to_bf16,
                      [](const unsigned char* b, float* y) { decode_q8_0(b, y); });
    checkGGUFDecoding("q4_0", 32, 18, {0}, gguf_reference::q4_0, dequantize_q4_0, dequantize_q4_0_to_bf16,
                      [](const unsigned char* b, float* y) { decode_q4_0(b, y); });
    checkGGUFDecoding("q4_1", 32, 20, {0, 2}, gguf_reference::q4_1, dequantize_q4_1, dequantize_q4_1_to_bf16,
                      [](const unsigned char* b, float* y) { decode_q4_1(b, y); });
    checkGGUFDecoding("q4_K", 256, 144, {0, 2}, gguf_reference::q4_K, dequantize_q4_K, dequantize_q4_K_to_bf16,
                      [](const unsigned char* b, float* y) { decode_q4_K(b, y); });
    checkGGUFDecoding("q6_K", 256, 210, {208}, gguf_reference::q6_K, dequantize_q6_K, dequantize_q6_K_to_bf16,
                      [](const unsigned char* b, float* y) { decode_q6_K(b, y); });
}

// 8-bit AdamW with thread blocks striding over the quantization blocks equals the same step done
// a quantization block at a time in plain C++ (with dynamic8_encode), bit for bit.
static void checkAdamW8bit() {
    const long long n = 70000, blocks = (n + 255) / 256;
    float maps[512];
    for (int i = 0; i < 256; i++) {
        maps[i] = i == 127 ? 0.f : (i - 127) / 128.f;  // signed: sorted, 0 at 127
        maps[256 + i] = i / 255.f;                       // unsigned: sorted from 0
    }
    auto p = random(n, 80), g = random(n, 81);
    std::vector<unsigned char> m(blocks * 260), v(blocks * 260);
    std::mt19937 generator(82);
    for (long long b = 0; b < blocks; b++) {
        const float mMax = 0.01f * (1 + b % 5), vMax = 1e-4f * (1 + b % 3);
        std::memcpy(&m[b * 260], &mMax, 4);
        std::memcpy(&v[b * 260], &vMax, 4);
        for (int t = 0; t < 256; t++) {
            const bool pad = b * 256 + t >= n;
            m[b * 260 + 4 + t] = pad ? 127 : (unsigned char)(generator() & 0xFF);
            v[b * 260 + 4 + t] = pad ? 0 : (unsigned char)(generator() & 0xFF);
        }
    }
    auto p2 = p;
    auto m2 = m, v2 = v;
    const float beta1 = 0.9f, beta2 = 0.999f, epsilon = 1e-8f, decay = 1 - 1e-5f, stepSize = 1e-3f / 0.271f, correction2 = 0.0547f;
    emulatedLaunch({8, 1, 1}, {256, 1, 1}, 0, adamw8bit_f32, p.data(), m.data(), v.data(), (const float*)g.data(), (const float*)maps, n,
                   beta1, beta2, epsilon, decay, stepSize, correction2);
    for (long long b = 0; b < blocks; b++) {
        float mAbsmax, vAbsmax, mi[256], vi[256], mMax = 0, vMax = 0;
        std::memcpy(&mAbsmax, &m2[b * 260], 4);
        std::memcpy(&vAbsmax, &v2[b * 260], 4);
        for (int t = 0; t < 256; t++) {
            const long long i = b * 256 + t;
            mi[t] = vi[t] = 0.f;
            if (i < n) {
                mi[t] = maps[m2[b * 260 + 4 + t]] * mAbsmax;
                vi[t] = maps[256 + v2[b * 260 + 4 + t]] * vAbsmax;
                mi[t] = mi[t] + (1.f - beta1) * (g[i] - mi[t]);
                vi[t] = vi[t] * beta2 + (1.f - beta2) * g[i] * g[i];
                p2[i] = p2[i] * decay - stepSize * (mi[t] / (std::sqrt(vi[t]) / correction2 + epsilon));
            }
            mMax = std::max(mMax, std::fabs(mi[t]));
            vMax = std::max(vMax, vi[t]);
        }
        for (int t = 0; t < 256; t++) {
            m2[b * 260 + 4 + t] = dynamic8_encode(mMax > 0.f ? mi[t] / mMax : 0.f, maps);
            v2[b * 260 + 4 + t] = dynamic8_encode(vMax > 0.f ? vi[t] / vMax : 0.f, maps + 256);
        }
        std::memcpy(&m2[b * 260], &mMax, 4);
        std::memcpy(&v2[b * 260], &vMax, 4);
    }
    report("adamw8bit_f32 (8 thread blocks striding over 274 quantization blocks): parameters", maxDifference(p, p2), 0);
    report("adamw8bit_f32: moments' codes and absmax, byte for byte", m == m2 && v == v2 ? 0 : 1, 0);
}

int main() {
    checkRoundedActivationBackward();
    checkNF4Decoding();
    checkGGUFDecodings();
    checkAdamW8bit();
    checkMultiTensorOptimizer();
    checkFlashAttention();
    checkColumnReductions();
    checkSumsOfSquares();
    checkAttentionQueryBlocks();
    return failures;
}
