// `frugal bench`: measure the CPU backend — GEMMs against raw BLAS and a real model's prefill and
// decode speed (`frugal bench inference`, the default), and LoRA training throughput of a
// random-weight model of a named shape (`frugal bench train`, BENCH.md's W0).
import ArgumentParser
import Foundation
import FrugalCore
import FrugalCPU
import FrugalCUDA
import FrugalEval
import FrugalMeasure
import FrugalFormats
import FrugalModels
import FrugalTraining

extension Frugal {
    struct Bench: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Measure Frugal: GEMMs, prefill and decode on the CPU, and training throughput on the GPU or the CPU.",
            subcommands: [Inference.self, Training.self], defaultSubcommand: Inference.self)
    }
}

// MARK: - Inference

extension Frugal.Bench {
    struct Inference: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "inference",
            abstract: "GEMMs against raw OpenBLAS, and a real model's prefill and decode speed.",
            discussion: """
            GEMM shapes are those of the model's projections at `--tokens` rows, with f32 weights
            (Frugal's linear vs cblas_sgemm on the same buffers) and with the model's own packed
            weights (widened tile by tile inside the linear op). Writes a JSON result when --output is given.
            """)

        @OptionGroup var model: ModelOptions
        @Option(help: "Rows of the GEMMs and prompt length for prefill.") var tokens = 256
        @Option(help: "Tokens to decode.") var decode = 64
        @Option(help: "Timed repetitions of each GEMM (the median is kept), and of prefill and decode.") var repeats = 5
        @Option(help: "Write the result JSON here (bench/results/DATE-cpu2-foundation.json).") var output: String?
        @Flag(help: "Time every CPU op of the last generation and print where the time went.") var profile = false

        func run() throws {
            let files = try withCleanErrors { try ModelFiles(path: model.path) }
            let backend = CPUBackend()
            let decoder = try model.decoder(files, on: backend)
            let c = files.configuration
            let threads = benchThreads()
            print("BLAS: \(backend.blas.libraryPath ?? "none (Swift fallback GEMM)"), \(threads) threads")
            var rows: [[String: Any]] = []
            let shapes = [("q/o proj", c.hiddenSize, c.heads * c.headDim), ("k/v proj", c.hiddenSize, c.kvHeads * c.headDim),
                          ("gate/up", c.hiddenSize, c.intermediateSize), ("down", c.intermediateSize, c.hiddenSize),
                          ("lm head", c.hiddenSize, c.vocabSize)]
            var table = [[String]]()
            var measured = [(String, Int, Int, Double, Double, Double, Tensor)]()
            let block = decoder.weights.blocks[0]
            let packed = ["q/o proj": block.query.weight, "k/v proj": block.key.weight, "gate/up": block.up.weight,
                          "down": block.down.weight, "lm head": decoder.weights.head]
            for (name, inputs, outputs) in shapes {
                let x = backend.zeros([tokens, inputs], .f32, .workspace)
                let w = backend.zeros([outputs, inputs], .f32, .workspace)
                let y = backend.zeros([tokens, outputs], .f32, .workspace)
                fillRandom(x); fillRandom(w)
                let ours = medianSeconds(repeats) { backend.linear(y, x, w, bias: nil) }
                let weight = packed[name]!
                let quantized = medianSeconds(repeats) { backend.linear(y, x, weight, bias: nil) }
                // One row: the decode path (dot products straight from the packed weight).
                let single = medianSeconds(repeats) { backend.linear(y.rows(0..<1), x.rows(0..<1), weight, bias: nil) }
                measured.append((name, inputs, outputs, ours, quantized, single, weight))
            }
            // The reference, measured last: one cblas_sgemm call per product on OpenBLAS's own
            // thread pool (Frugal runs OpenBLAS single-threaded and splits products itself), then
            // back to one OpenBLAS thread, and a pause so its pool stops spinning before prefill.
            let threaded = BLAS(threads: threads)
            for (name, inputs, outputs, ours, quantized, single, weight) in measured {
                let x = backend.zeros([tokens, inputs], .f32, .workspace)
                let w = backend.zeros([outputs, inputs], .f32, .workspace)
                let y = backend.zeros([tokens, outputs], .f32, .workspace)
                fillRandom(x); fillRandom(w)
                let flops = 2.0 * Double(tokens * inputs * outputs)
                let raw = medianSeconds(repeats) {
                    threaded.sgemm(transposeA: false, transposeB: true, m: tokens, n: outputs, k: inputs, alpha: 1,
                                   a: x.floats.baseAddress!, lda: inputs, b: w.floats.baseAddress!, ldb: inputs,
                                   beta: 0, c: y.floats.baseAddress!, ldc: outputs)
                }
                table.append([name, "\(tokens)×\(inputs)·\(inputs)×\(outputs)", gflops(flops, raw), gflops(flops, ours),
                              String(format: "%.1f%%", (ours / raw - 1) * 100), weight.dtype.rawValue, gflops(flops, quantized),
                              String(format: "%.1f", Double(weight.byteCount) / single / 1e9)])
                rows.append(["shape": name, "m": tokens, "k": inputs, "n": outputs,
                             "openblas_gflops": flops / raw / 1e9, "frugal_f32_gflops": flops / ours / 1e9,
                             "overhead": ours / raw - 1, "packed_dtype": weight.dtype.rawValue,
                             "frugal_packed_gflops": flops / quantized / 1e9,
                             "frugal_packed_m1_gb_per_s": Double(weight.byteCount) / single / 1e9])
            }
            _ = BLAS()
            Thread.sleep(forTimeInterval: 0.5)
            print(Table(header: ["GEMM", "shape", "OpenBLAS GFLOP/s", "Frugal f32", "overhead", "packed", "Frugal packed",
                                 "M=1 GB/s"], rows: table).render())

            let prompt = (0..<tokens).map { Int32(($0 * 7919) % c.vocabSize) }
            let generator = Generator(decoder: decoder)
            _ = generator.generate(prompt: Array(prompt.prefix(8)), options: GenerationOptions(maxTokens: 2))
            var runs = [GenerationStatistics]()
            let generations = max(1, min(repeats, 3))
            for run in 0..<generations {
                backend.profile.enabled = profile && run == generations - 1
                runs.append(generator.generate(prompt: prompt, options: GenerationOptions(maxTokens: decode)).statistics)
            }
            backend.profile.enabled = false
            let prefill = median(runs.map(\.prefillTokensPerSecond)), decoding = median(runs.map(\.decodeTokensPerSecond))
            print(String(format: "prefill %d tokens: %.1f tokens/s;  decode %d tokens: %.1f tokens/s (medians of %d)",
                         runs[0].promptTokens, prefill, runs[0].generatedTokens, decoding, runs.count))
            if profile { printProfile(backend.profile, steps: 1) }
            if let output {
                let result: [String: Any] = [
                    "date": benchDate(), "device": cpuDevice(backend), "git_rev": gitRevision(),
                    "command": "frugal bench --tokens \(tokens) --decode \(decode) --repeats \(repeats)",
                    "model": files.path.split(separator: "/").last.map(String.init) ?? files.path,
                    "gemm": rows,
                    "prefill_tokens": runs[0].promptTokens, "prefill_tokens_per_s": prefill,
                    "decode_tokens": runs[0].generatedTokens, "decode_tokens_per_s": decoding,
                ]
                try writeJSON(result, to: output)
                print("wrote \(output)")
            }
        }

        private func fillRandom(_ t: Tensor) {
            var state: UInt32 = 12345
            for i in 0..<t.count {
                state = state &* 1_664_525 &+ 1_013_904_223
                t.floats[i] = Float(state >> 8) / Float(1 << 24) - 0.5
            }
        }

        private func gflops(_ flops: Double, _ seconds: Double) -> String { String(format: "%.1f", flops / seconds / 1e9) }
    }
}

// MARK: - Training

extension Frugal.Bench {
    struct Training: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "train",
            abstract: "Training throughput of a random-weight model of a named shape (BENCH.md's W0, W1, W2).",
            discussion: """
            Builds the shape with random weights (a frozen LoRA base in bf16 with --precision bf16),
            attaches LoRA (alpha = 2 × rank, dropout 0) or trains every weight, and runs AdamW (lr
            1e-4, no clipping) on random tokens: --warmup untimed steps, then --steps timed ones.
            Prints tokens/s, peak memory by category, energy from the device's counter (NVML on the
            GPU, RAPL on the CPU) and model-FLOPs utilization; --json prints the result as one
            BENCH.md row on the last line.
              frugal bench train --shape smollm2 --targets q,k,v --batch 8 --seq 256 --steps 5
              frugal bench train --device cuda --shape llama3.1-8b --targets all-linear --precision bf16 --batch 4 --seq 1024 --checkpointing
            With --model, the weights come from a model file or folder instead (bench/loss_agreement.py
            trains the same weights on the same tokens with transformers and compares the losses).
            """)

        @OptionGroup var device: DeviceOptions
        @Option(help: "Model shape: \(ModelConfiguration.shapeNames.joined(separator: ", ")).") var shape = "smollm2"
        @Option(help: ArgumentHelp("A GGUF file or Hugging Face folder to train instead of random weights of --shape.", valueName: "path"))
        var model: String?
        @Option(help: "lora or full.") var method = "lora"
        @Option(help: "LoRA targets: q,k,v,o,gate,up,down or all-linear.") var targets = "q,k,v"
        @Option(help: "LoRA rank.") var rank = 16
        @Option(help: "fp32, fp16, bf16 or pure-bf16 (bf16 and fp16 also store a frozen base in that dtype).")
        var precision = "fp32"
        @Option(help: "Sequences per micro-batch.") var batch = 8
        @Option(help: "Tokens per sequence.") var seq = 256
        @Option(name: .customLong("grad-accum"), help: "Micro-batches per optimizer step.") var gradAccum = 1
        @Option(help: "Timed steps.") var steps = 5
        @Option(help: "Untimed steps first.") var warmup = 2
        @Flag(help: "Activation checkpointing.") var checkpointing = false
        @Option(help: activationsHelp) var activations: String?
        @Option(help: optimizerHelp) var optimizer = "adamw"
        @Flag(name: .customLong("fused-step"), help: fusedStepHelp) var fusedStep = false
        @Flag(name: .customLong("offload-optimizer"), help: offloadOptimizerHelp) var offloadOptimizer = false
        @Flag(name: .customLong("offload-activations"), help: offloadActivationsHelp) var offloadActivations = false
        @OptionGroup var quantization: QuantizeOptions
        @Option(help: "Workload name for the JSON row.") var workload = "W0"
        @Flag(help: "Print the result as one JSON row (BENCH.md's format) on the last line.") var json = false
        @Flag(help: "Time every op over the timed steps and print where the time went (on the GPU each op then waits for the device: slower steps).")
        var profile = false

        func run() throws {
            let files = try model.map { path in try withCleanErrors { try ModelFiles(path: path) } }
            guard let configuration = files?.configuration ?? ModelConfiguration.named(shape) else {
                throw ValidationError("unknown shape '\(shape)' (known: \(ModelConfiguration.shapeNames.joined(separator: ", ")))")
            }
            let policy = try parsePrecision(precision)
            guard method == "lora" || method == "full" else { throw ValidationError("unknown method '\(method)' (lora or full)") }
            let full = method == "full"
            let compute = try device.compute(lowPrecisionMatmul: policy != .fp32)
            let backend = compute.backend
            guard !full || quantization.dtype == nil else { throw ValidationError("--quantize needs --method lora (a full fine-tune trains f32 weights)") }
            let baseDType: DType = full ? policy.createdDType : policy.computeDType
            let decoder = try files.map { files in
                try withCleanErrors {
                    try files.decoder(on: backend, trainable: full, trainableDType: policy.createdDType, quantize: quantization.dtype)
                }
            } ?? Decoder.random(configuration, on: backend, category: full ? .trainable : .weights, dtype: baseDType,
                                quantize: quantization.dtype, seed: 1)
            if let line = quantization.summary(decoder) { print(line) }
            let targetList = targets.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
            let lora = LoRAConfiguration(rank: rank, alpha: Float(2 * rank), dropout: 0, targets: targetList)
            let parameters = try withCleanErrors {
                full ? try decoder.allWeights(shareBlockGradients: fusedStep) : try decoder.attachLoRA(lora, seed: 2, shareBlockGradients: fusedStep,
                                                                                            dtype: policy.createdDType)
            }
            var training = TrainingConfiguration()
            training.method = full ? .full : .lora(lora)
            training.steps = warmup + steps
            training.microBatch = batch
            training.gradientAccumulation = gradAccum
            training.precision = policy
            training.learningRate = 1e-4
            training.schedule = .constant
            training.maxGradientNorm = 0
            training.checkpointing = checkpointing
            training.optimizer = try parseOptimizer(optimizer)
            training.fusedOptimizerStep = fusedStep
            training.offloadOptimizer = offloadOptimizer
            training.offloadActivations = offloadActivations
            training.activations = try parseActivations(activations)
            // Random sequences of seq + 1 tokens: the first seq are the input, the last seq the targets.
            var random = SplitMix64(seed: 3)
            let sequences = (0..<(2 * batch * gradAccum)).map { _ in
                let ids = (0...seq).map { _ in Int32(random.next() % UInt64(configuration.vocabSize)) }
                return TokenizedExample(tokens: Array(ids.dropLast()), targets: Array(ids.dropFirst()))
            }
            let loader = try withCleanErrors {
                try DataLoader(sequences: sequences, batchSize: batch, strategy: .padding(length: seq), shuffle: false)
            }
            let trainer = try withCleanErrors {
                try Trainer(decoder: decoder, parameters: parameters, configuration: training, loader: loader)
            }
            let what = full ? "full fine-tune" : "LoRA r=\(rank) on \(targets)"
            print("\(model ?? shape): \(configuration.layers) layers, \(what) (\(formatCount(parameters.count)) trainable), \(precision) with \(training.activationDType) activations, batch \(batch) × \(seq) × \(gradAccum), \(warmup) warm-up + \(steps) timed steps on \(compute.description)")
            let cpuBackend = backend as? CPUBackend
            let opProfile = cpuBackend?.profile ?? (backend as? CUDABackend)?.profile
            var timed = [Double](), cpu = [Double](), tokens = 0, losses = [Double](), memory = MemorySnapshot()
            var phaseSeconds = [String: Double]()
            var energy: EnergyWindow?
            opProfile?.enabled = profile && warmup == 0
            if warmup == 0 { energy = compute.energyMeter?.start() }
            while !trainer.isFinished {
                let cpuBefore = processCPUSeconds(), started = ContinuousClock.now
                let event = try withCleanErrors { try trainer.trainStep() }
                let cpuSeconds = processCPUSeconds() - cpuBefore
                let step: Int
                switch event {
                case .checkpoint: continue
                case let .skippedStep(skipped, newLossScale):
                    // fp16's overflowed step costs time and energy but trains no token.
                    step = skipped
                    print("step \(step) (\(step <= warmup ? "warm-up" : "timed")): skipped, fp16 gradients overflowed; loss scale now \(newLossScale)")
                    if step > warmup {
                        timed.append((ContinuousClock.now - started).inSeconds)
                        cpu.append(cpuSeconds)
                    }
                case let .step(metrics):
                    step = metrics.step
                    let kind = step <= warmup ? "warm-up" : "timed"
                    print(String(format: "step %d (%@): %.3f s (CPU %.2f s), %.1f tokens/s, loss %.4f", step, kind,
                                 metrics.seconds, cpuSeconds, metrics.tokensPerSecond, metrics.loss))
                    if step > warmup {
                        timed.append(metrics.seconds)
                        cpu.append(cpuSeconds)
                        tokens += metrics.tokens
                        phaseSeconds.merge(metrics.phaseSeconds ?? [:], uniquingKeysWith: +)
                    }
                    losses.append(metrics.loss)
                    memory = metrics.memory
                }
                if step == warmup {
                    opProfile?.enabled = profile
                    energy = compute.energyMeter?.start()
                }
            }
            let joules = energy?.stop()
            let total = timed.reduce(0, +), tokensPerSecond = Double(tokens) / max(total, 1e-12)
            let gib = 1.0 / Double(1 << 30)
            var byCategory = [String: Double]()
            for category in MemoryCategory.allCases {
                byCategory[category.rawValue] = Double(memory.peak[category, default: 0]) * gib
            }
            // The CPU's peak is the process's resident set; the GPU's what the ledger counted at once.
            let gpu = backend as? CUDABackend
            let peak = gpu == nil ? Double(peakResidentBytes()) * gib : Double(memory.peakTotal) * gib
            let flops = modelFLOPsPerToken(configuration, seq: seq, weightsTrain: full) * tokensPerSecond
            print(String(format: "%.1f tokens/s (%.3f s/step), peak %@ %.2f GiB, ledger peak %.2f GiB, MFU %.1f%%", tokensPerSecond,
                         total / Double(max(timed.count, 1)), gpu == nil ? "RSS" : "on the GPU", peak,
                         Double(memory.peakTotal) * gib, 100 * flops / denseBF16Peak))
            let tensorCoreAttention = gpu?.usesTensorCoreAttention(headDim: configuration.headDim, activations: training.activationDType)
            if let gpu {
                let reserved = gpu.reservedMemory, device = gpu.deviceMemory()
                print(String(format: "GPU allocator: %.2f GiB reserved at peak; driver: %.2f GiB in use now", Double(reserved.peak) * gib,
                             Double(device.total - device.free) * gib))
                print("attention: " + (tensorCoreAttention == true ? "tensor-core kernels" : "batched GEMMs"))
            } else {
                print(String(format: "CPU time %.2f s/step (user + system, all threads): %.1f tokens per CPU-second",
                             cpu.reduce(0, +) / Double(max(cpu.count, 1)), Double(tokens) / max(cpu.reduce(0, +), 1e-9)))
            }
            let phasesPerStep = StepPhase.allCases.compactMap { phase in
                phaseSeconds[phase.rawValue].map { (phase.rawValue, $0 / Double(max(timed.count, 1))) }
            }
            print("per step on the device: " + phasesPerStep.map { String(format: "%@ %.3f s", $0.0, $0.1) }.joined(separator: ", "))
            print("peak by category: " + MemoryCategory.allCases.map {
                "\($0.rawValue) \(formatBytes(memory.peak[$0, default: 0]))"
            }.joined(separator: ", "))
            let hostMemory = backend.hostLedger.snapshot
            if hostMemory.peakTotal > 0 { print("offloaded to host memory, peak: " + describePeaks(hostMemory)) }
            // What `frugal plan` predicted for this run, beside what the ledger measured.
            let plan = try MemoryPlan.predict(MemoryPlan.Configuration(
                model: configuration, baseDType: baseDType, quantize: quantization.dtype, method: training.method, precision: policy,
                optimizer: training.optimizer, microBatch: batch, sequenceLength: seq, checkpointing: checkpointing,
                fusedOptimizerStep: fusedStep, offloadOptimizer: offloadOptimizer, offloadActivations: offloadActivations,
                activations: training.activationDType, device: backend.device))
            print(String(format: "frugal plan predicted a peak of %.2f GiB (ledger %.2f GiB, %+.1f%%)", Double(plan.peakTotal) * gib,
                         Double(memory.peakTotal) * gib, 100 * (Double(plan.peakTotal) / Double(max(memory.peakTotal, 1)) - 1)))
            if let joules {
                print(String(format: "energy %.1f J over the timed steps (%@): %.2f J per 1000 tokens, %.0f W average", joules.joules,
                             joules.meter, joules.joules / Double(max(tokens, 1)) * 1000, joules.averageWatts ?? 0))
            }
            if profile, let opProfile { printProfile(opProfile, steps: timed.count) }
            if json {
                var row: [String: Any] = [
                    "workload": workload, "system": "frugal", "model": model.map { URL(fileURLWithPath: $0).lastPathComponent } ?? "\(shape)-shape", "method": method, "lora_r": rank,
                    "targets": targets, "precision": precision, "activations": training.activationDType.rawValue, "quantize": quantization.quantize ?? "none", "batch": batch, "seq": seq, "grad_accum": gradAccum,
                    "checkpointing": checkpointing, "offload_optimizer": offloadOptimizer, "offload_activations": offloadActivations,
                    "steps_timed": timed.count,
                    "tokens_per_s": tokensPerSecond, "step_s": total / Double(max(timed.count, 1)),
                    "step_s_all": timed, "peak_gib": peak, "ledger_peak_gib": Double(memory.peakTotal) * gib,
                    "peak_by_category_gib": byCategory, "loss_first": losses.first ?? 0, "loss_last": losses.last ?? 0,
                    "losses": losses, "mfu": flops / denseBF16Peak, "device": compute.description,
                    "predicted_peak_gib": Double(plan.peakTotal) * gib,
                    "phase_s_per_step": Dictionary(uniqueKeysWithValues: phasesPerStep),
                ]
                if let joules {
                    row["joules_per_ktok"] = joules.joules / Double(max(tokens, 1)) * 1000
                    row["avg_watts"] = joules.averageWatts
                }
                if let gpu { row["reserved_peak_gib"] = Double(gpu.reservedMemory.peak) * gib }
                if let tensorCoreAttention { row["attention"] = tensorCoreAttention ? "tensor-core" : "gemm" }
                if hostMemory.peakTotal > 0 {
                    row["host_peak_by_category_gib"] = Dictionary(uniqueKeysWithValues: hostMemory.peak.map { ($0.key.rawValue, Double($0.value) * gib) })
                }
                if cpuBackend != nil {
                    row["threads"] = benchThreads()
                    row["cpu_s_per_step"] = cpu.reduce(0, +) / Double(max(cpu.count, 1))
                }
                let data = try JSONSerialization.data(withJSONObject: row, options: [.sortedKeys])
                print(String(decoding: data, as: UTF8.self))
            }
        }
    }
}

/// BENCH.md's dense bf16 peak of an H100 SXM or H200, FLOP/s.
private let denseBF16Peak = 989e12

/// BENCH.md's model FLOPs per trained token: 2N forward and 2N backward through the activations,
/// 2N more when the weights train, N the weights that multiply (every projection and the head);
/// plus attention's 4·L·T·d forward, ×3 with backward.
private func modelFLOPsPerToken(_ c: ModelConfiguration, seq: Int, weightsTrain: Bool) -> Double {
    let q = c.heads * c.headDim, kv = c.kvHeads * c.headDim
    let block = c.hiddenSize * (2 * q + 2 * kv) + (c.gatedMLP ? 3 : 2) * c.hiddenSize * c.intermediateSize
    let n = Double(c.layers * block + c.vocabSize * c.hiddenSize)
    let attention = 4 * Double(c.layers * seq * q) * 3
    return (weightsTrain ? 6 : 4) * n + attention
}

// MARK: - Helpers

/// The median wall time of `repeats` runs of `body`, after one warm-up run.
private func medianSeconds(_ repeats: Int, _ body: () -> Void) -> Double {
    body()
    var times = [Double]()
    for _ in 0..<max(1, repeats) {
        let start = ContinuousClock.now
        body()
        times.append((ContinuousClock.now - start).inSeconds)
    }
    return median(times)
}

private func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return 0 }
    let mid = sorted.count / 2
    return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

/// User plus system CPU seconds of the whole process (all threads) so far.
private func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) * 1e-6 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Prints the op profile as a table: calls, seconds and share, per step (or per run).
private func printProfile(_ profile: OpProfile, steps: Int) {
    let entries = profile.snapshot
    let total = entries.reduce(0) { $0 + $1.entry.seconds }
    let perStep = 1 / Double(max(steps, 1))
    print(Table(header: ["op", "calls/step", "s/step", "share"], rows: entries.map { name, entry in
        [name, String(format: "%.0f", Double(entry.calls) * perStep), String(format: "%.3f", entry.seconds * perStep),
         String(format: "%.1f%%", 100 * entry.seconds / max(total, 1e-12))]
    }).render())
    print(String(format: "inside the backend: %.2f s/step", total * perStep))
}

/// The process's peak resident set size in bytes (`getrusage`'s `ru_maxrss`, KiB on Linux).
private func peakResidentBytes() -> Int {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Int(usage.ru_maxrss) * 1024
}

/// The threads the CPU backend uses: FRUGAL_THREADS when set, else the active processor count.
private func benchThreads() -> Int {
    if let text = ProcessInfo.processInfo.environment["FRUGAL_THREADS"], let n = Int(text), n > 0 { return n }
    return ProcessInfo.processInfo.activeProcessorCount
}

private func benchDate() -> String { String(ISO8601DateFormatter().string(from: Date()).prefix(10)) }

private func cpuDevice(_ backend: CPUBackend) -> String {
    "CPU, \(ProcessInfo.processInfo.activeProcessorCount) cores (\(benchThreads()) threads), \(backend.blas.libraryPath ?? "no BLAS")"
}

private func writeJSON(_ object: [String: Any], to path: String) throws {
    let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    try data.write(to: URL(fileURLWithPath: path))
}

private func gitRevision() -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["git", "rev-parse", "--short", "HEAD"]
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = FileHandle.nullDevice
    guard (try? process.run()) != nil else { return "unknown" }
    process.waitUntilExit()
    let text = String(data: pipe.fileHandleForReading.readDataToEndOfFile(), encoding: .utf8) ?? ""
    return text.trimmingCharacters(in: .whitespacesAndNewlines)
}
