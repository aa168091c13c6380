// `frugal plan`: predict a fine-tuning run's peak memory by category (and its compute per token)
// without running it, and pick the fastest configuration that fits a memory budget.
import ArgumentParser
import Foundation
import FrugalCore
import FrugalFormats
import FrugalModels
import FrugalTraining

extension Frugal {
    struct Plan: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Predict a fine-tuning run's peak memory by category, and the fastest configuration that fits a budget.",
            discussion: """
            Counts the tensors a run would allocate, as the memory ledger of `frugal train`
            and `frugal bench train` measures them, in six categories:
              weights      the frozen base as stored (none in a full fine-tune)
              trainable    LoRA's A and B, or every weight, in f32 (bf16 under
                           pure-bf16)
              gradients    one f32 value per trainable value (one block's and those
                           outside the blocks with --fused-step)
              optimizer    AdamW's two moments in f32 (8-bit codes in 260-byte
                           blocks of 256 with --optimizer adamw8bit; SGD's one
                           buffer in f32), and f32 masters under fp16 and bf16
              activations  what forward keeps for backward: every block's tensors,
                           or with --checkpointing each block's input and the one
                           block being recomputed, in --activations' dtype (bf16
                           under bf16 and pure-bf16, f16 under fp16); and the
                           f32 gradients of the block in backward
              workspace    scratch: the GPU's cuBLASLt and attention buffers, the
                           CPU's chunk of logits
            --offload-optimizer moves the optimizer's state, an f32 copy of every
            trainable value and the gradients of two blocks in flight to host memory (no
            optimizer memory on the device); --offload-activations (with --checkpointing) moves every
            checkpointed block input there. Host memory is shown apart from the device's.
            Activations grow with batch × seq and usually dominate. Checkpointing cuts
            them to about one block's worth, at the cost of every block's forward
            running twice (Llama-3.1-8B LoRA on an H100: 36% slower). Predictions match
            the CPU ledger and H100 runs of Llama-3.1-8B to about 1%.

            With --method, --precision and --checkpointing (or --no-checkpointing) all
            given, shows that one configuration category by category. Leave any out
            and every choice of it is planned, with --batch halved down to 1; the
            table marks what fits --budget and recommends the fastest that does: no
            checkpointing first (nothing recomputed), then the largest batch.
            A --shape's frozen base is stored in the precision's dtype (bf16 under
            bf16, as `bench train` builds it); a --model's stays as its file stores it.
            --quantize nf4 or q8_0 plans LoRA on a base whose block projections are
            quantized on load (as `train --quantize` does; a full fine-tune ignores it).
              frugal plan --shape llama3.1-8b --lora-targets all-linear --budget 24
              frugal plan --shape llama3.1-8b --method lora --precision bf16 \\
                  --lora-targets all-linear --batch 4 --seq 1024 --checkpointing
              frugal plan --model path/to/model --method full --budget 40 --json
            """)

        @Option(help: "Model shape: \(ModelConfiguration.shapeNames.joined(separator: ", ")) (default smollm2, unless --model).")
        var shape: String?
        @Option(help: ArgumentHelp("A GGUF file or a Hugging Face model folder: plan its configuration and stored dtype.",
                                   valueName: "path"))
        var model: String?
        @OptionGroup var quantization: QuantizeOptions
        @Option(help: "lora or full (default: plan both).") var method: String?
        @Option(name: .customLong("lora-rank")) var loraRank = 16
        @Option(name: .customLong("lora-targets"), help: "Comma-separated: q,k,v,o,gate,up,down or all-linear.")
        var loraTargets = "q,k,v,o"
        @Option(name: .customLong("freeze-layers"),
                help: "Comma-separated blocks without adapters (LoRA): those below the lowest adapted block keep no activations and run no backward.")
        var freezeLayers: String?
        @Option(help: "fp32, fp16, bf16 or pure-bf16 (default: plan fp32, bf16 and pure-bf16; fp16 needs what bf16 does).")
        var precision: String?
        @Option(help: optimizerHelp) var optimizer = "adamw"
        @Option(help: "Sequences per micro-batch (when planning several configurations, the largest tried).") var batch = 8
        @Option(help: "Tokens per sequence.") var seq = 1024
        @Flag(inversion: .prefixedNo, help: "Activation checkpointing (default: plan with and without).") var checkpointing: Bool?
        @Flag(name: .customLong("fused-step"), help: fusedStepHelp) var fusedStep = false
        @Flag(name: .customLong("offload-optimizer"), help: offloadOptimizerHelp) var offloadOptimizer = false
        @Flag(name: .customLong("offload-activations"), help: offloadActivationsHelp) var offloadActivations = false
        @Option(help: activationsHelp) var activations: String?
        @Option(help: "cuda or cpu: the backend whose workspace is counted.") var device = "cuda"
        @Option(help: "Memory budget in GiB.") var budget: Double = 80
        @Flag(help: "Print the predictions as JSON.") var json = false

        func run() throws {
            let (name, model, storedDType) = try target()
            guard let kind = DeviceKind(rawValue: device.lowercased()) else {
                throw ValidationError("unknown --device '\(device)' (cuda or cpu)")
            }
            let optimizerKind = try parseOptimizer(optimizer), activationDType = try parseActivations(activations)
            let frozenLayers = try parseFrozenLayers(freezeLayers)
            guard batch > 0, seq > 0, budget > 0 else { throw ValidationError("--batch, --seq and --budget must be positive") }
            guard !offloadActivations || checkpointing != false else {
                throw ValidationError("--offload-activations moves the block inputs --checkpointing keeps: it needs checkpointing")
            }
            let lora = LoRAConfiguration(rank: loraRank, alpha: Float(2 * loraRank),
                                         targets: loraTargets.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
            let methods: [TrainingMethod] = try method.map { [try parseMethod($0, lora)] } ?? [.lora(lora), .full]
            let precisions: [PrecisionPolicy] = try precision.map { [try parsePrecision($0)] }
                ?? (kind == .cuda ? [.bf16, .fp32, .pureBF16] : [.fp32, .bf16, .pureBF16])
            let single = method != nil && precision != nil && checkpointing != nil
            let batches = single ? [batch] : Array(sequence(first: batch) { $0 > 1 ? $0 / 2 : nil })
            var plans = [MemoryPlan]()
            for method in methods {
                for policy in precisions {
                    for recompute in checkpointing.map({ [$0] }) ?? [false, true] {
                        for size in batches {
                            // A full fine-tune holds every weight as f32 trainable; a named shape's
                            // frozen base is stored in the compute dtype, as `bench train` builds it.
                            let base = method == .full ? .f32 : storedDType ?? policy.computeDType
                            plans.append(try withCleanErrors {
                                try MemoryPlan.predict(MemoryPlan.Configuration(
                                    model: model, baseDType: base, quantize: method == .full ? nil : quantization.dtype,
                                    method: method, precision: policy, optimizer: optimizerKind,
                                    microBatch: size, sequenceLength: seq, checkpointing: recompute,
                                    fusedOptimizerStep: fusedStep, offloadOptimizer: offloadOptimizer,
                                    offloadActivations: offloadActivations && recompute, activations: activationDType,
                                    device: kind, frozenLayers: frozenLayers))
                            })
                        }
                    }
                }
            }
            let budgetBytes = Int(budget * Double(1 << 30))
            let best = MemoryPlan.fastest(plans, fitting: budgetBytes)
            if json { return try printJSON(name, plans, best: best, budgetBytes: budgetBytes) }
            let c = model
            print("\(name): \(c.layers) layers, hidden \(c.hiddenSize), MLP \(c.intermediateSize), vocabulary \(c.vocabSize); seq \(seq), \(describe(optimizerKind)), on \(kind == .cuda ? "the GPU (cuda)" : "the CPU"); budget \(formatBytes(budgetBytes))"
                  + (quantization.dtype.map { "; LoRA's base projections quantized to \($0.rawValue)" } ?? ""))
            if single { printOne(plans[0], budgetBytes: budgetBytes) } else { printTable(plans, best: best, budgetBytes: budgetBytes) }
        }

        /// The model's name, configuration, and its stored dtype (nil for a named shape).
        private func target() throws -> (String, ModelConfiguration, DType?) {
            if let model {
                guard shape == nil else { throw ValidationError("give --shape or --model, not both") }
                let files = try withCleanErrors { try ModelFiles(path: model) }
                // The dtype holding most of the values (GGUF files mix block types; norms stay f32).
                var values = [DType: Int]()
                for tensor in try withCleanErrors({ try files.storedTensors() }) { values[tensor.dtype, default: 0] += tensor.shape.count }
                let dtype = values.max { $0.value < $1.value }?.key ?? .f32
                return (URL(fileURLWithPath: model).lastPathComponent + " (\(dtype.rawValue))", files.configuration, dtype)
            }
            let name = shape ?? "smollm2"
            guard let configuration = ModelConfiguration.named(name) else {
                throw ValidationError("unknown shape '\(name)' (known: \(ModelConfiguration.shapeNames.joined(separator: ", ")))")
            }
            return ("\(name) shape", configuration, nil)
        }

        private func parseMethod(_ text: String, _ lora: LoRAConfiguration) throws -> TrainingMethod {
            switch text {
            case "lora": return .lora(lora)
            case "full": return .full
            default: throw ValidationError("unknown method '\(text)' (lora or full)")
            }
        }

        /// One configuration, category by category.
        private func printOne(_ plan: MemoryPlan, budgetBytes: Int) {
            let p = plan.configuration
            let switches = [p.fusedOptimizerStep ? "fused step" : nil, p.offloadOptimizer ? "optimizer offloaded" : nil,
                            p.offloadActivations ? "activations offloaded" : nil].compactMap { $0 }
            let frozen = p.method == .full || p.frozenLayers.isEmpty ? "" : ", \(p.frozenLayers.count) of \(p.model.layers) blocks frozen"
            print("\(describe(p.method))\(frozen) (\(formatCount(plan.trainableCount)) trainable), \(p.precision.rawValue) with \(p.activationDType.rawValue) activations, base \(p.method == .full ? "\(p.precision.trainableDType.rawValue) (trainable)" : p.baseDType.rawValue), batch \(p.microBatch) × \(p.sequenceLength), \(p.checkpointing ? "checkpointing" : "no checkpointing")"
                  + switches.map { ", " + $0 }.joined())
            var rows = MemoryCategory.allCases.map { category in
                let bytes = plan.peak[category, default: 0]
                return [category.rawValue, formatBytes(bytes), String(format: "%.1f%%", 100 * Double(bytes) / Double(max(plan.peakTotal, 1)))]
            }
            rows.append(["peak", formatBytes(plan.peakTotal), ""])
            print(Table(header: ["category", "predicted", "of peak"], rows: rows).render())
            if !plan.hostPeak.isEmpty {
                let host = MemoryCategory.allCases.compactMap { category in plan.hostPeak[category].map { "\(category.rawValue) \(formatBytes($0))" } }
                print("offloaded to host memory: \(host.joined(separator: ", ")) (\(formatBytes(plan.hostPeak.values.reduce(0, +))) in all)")
            }
            let spare = budgetBytes - plan.peakTotal
            print(spare >= 0 ? "fits the budget of \(formatBytes(budgetBytes)) with \(formatBytes(spare)) to spare"
                             : "does not fit the budget of \(formatBytes(budgetBytes)): \(formatBytes(-spare)) over")
            print("compute: \(formatCount(Int(plan.flopsPerToken))) FLOP per token\(p.checkpointing ? " (every block's forward runs again in backward)" : "")")
        }

        /// Every candidate in a table, and the recommendation.
        private func printTable(_ plans: [MemoryPlan], best: MemoryPlan?, budgetBytes: Int) {
            func gib(_ bytes: Int) -> String { String(format: "%.2f", Double(bytes) / Double(1 << 30)) }
            let rows = plans.map { plan -> [String] in
                let p = plan.configuration
                return [plan == best ? "→" : "", p.method == .full ? "full" : "lora", p.precision.rawValue, p.checkpointing ? "yes" : "no",
                        "\(p.microBatch)"]
                    + MemoryCategory.allCases.map { gib(plan.peak[$0, default: 0]) }
                    + [gib(plan.peakTotal), plan.peakTotal <= budgetBytes ? "yes" : "no", formatCount(Int(plan.flopsPerToken))]
            }
            let lora = plans.first { $0.configuration.method != .full }.map { " (\(describe($0.configuration.method)))" } ?? ""
            print("peak memory in GiB by category\(lora)")
            print(Table(header: ["", "method", "precision", "ckpt", "batch", "weights", "trainable", "grads", "optimizer",
                                 "activations", "workspace", "peak", "fits", "FLOP/token"], rows: rows).render())
            guard let best else {
                let smallest = plans.min { $0.peakTotal < $1.peakTotal }!
                print("nothing fits \(formatBytes(budgetBytes)): the smallest plan (\(summary(smallest.configuration))) needs \(formatBytes(smallest.peakTotal)).")
                return
            }
            let p = best.configuration
            let why = p.checkpointing
                ? "only with checkpointing does anything fit, and batch \(p.microBatch) is the largest that does"
                : "no block is recomputed in backward (checkpointing off), and batch \(p.microBatch) is the largest that fits without it"
            print("recommended (→): \(summary(p)), \(formatBytes(best.peakTotal)) — the fastest that fits: \(why).")
        }

        /// "LoRA, bf16, checkpointing, batch 4".
        private func summary(_ p: MemoryPlan.Configuration) -> String {
            "\(p.method == .full ? "full fine-tune" : "LoRA"), \(p.precision.rawValue), \(p.checkpointing ? "checkpointing" : "no checkpointing"), batch \(p.microBatch)"
        }

        private func printJSON(_ name: String, _ plans: [MemoryPlan], best: MemoryPlan?, budgetBytes: Int) throws {
            let gib = 1.0 / Double(1 << 30)
            let rows: [[String: Any]] = plans.map { plan in
                let p = plan.configuration
                var row: [String: Any] = [
                    "method": p.method == .full ? "full" : "lora", "precision": p.precision.rawValue,
                    "optimizer": p.optimizer.rawValue, "activations": p.activationDType.rawValue, "base_dtype": p.method == .full ? "f32" : p.baseDType.rawValue,
                    "quantize": p.quantize?.rawValue ?? "none",
                    "batch": p.microBatch, "seq": p.sequenceLength, "checkpointing": p.checkpointing,
                    "device": p.device.rawValue, "trainable": plan.trainableCount,
                    "peak_by_category_gib": Dictionary(uniqueKeysWithValues: MemoryCategory.allCases.map {
                        ($0.rawValue, Double(plan.peak[$0, default: 0]) * gib)
                    }),
                    "host_by_category_gib": Dictionary(uniqueKeysWithValues: plan.hostPeak.map { ($0.key.rawValue, Double($0.value) * gib) }),
                    "offload_optimizer": p.offloadOptimizer, "offload_activations": p.offloadActivations,
                    "peak_gib": Double(plan.peakTotal) * gib, "fits": plan.peakTotal <= budgetBytes,
                    "gflop_per_token": plan.flopsPerToken / 1e9, "recommended": plan == best,
                ]
                if case let .lora(lora) = p.method {
                    row["lora_r"] = lora.rank
                    row["targets"] = lora.targets.joined(separator: ",")
                }
                return row
            }
            let object: [String: Any] = ["model": name, "budget_gib": budget, "plans": rows]
            let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        }
    }
}
