// PlanTests: `MemoryPlan`'s predictions against measured peaks — the CPU ledger of a few Trainer
// steps on SmolLM2's width (f32, bf16 and quantized bases) and GPT-2's layout, and the H100 runs of BENCH.md's W1 (Llama-3.1-8B's
// shape) and W2 (Llama-2-7B's).

import Foundation
import FrugalCore
import FrugalCPU
import FrugalFormats
import FrugalModels
import FrugalTraining
import XCTest

final class PlanTests: XCTestCase {
    /// SmolLM2-135M's widths and vocabulary with 4 of its 30 layers, so a step takes a second.
    static let shape: ModelConfiguration = {
        var c = ModelConfiguration.smolLM2_135M
        c.layers = 4
        return c
    }()

    /// Runs two Trainer steps of `plan`'s configuration on the CPU with random weights and
    /// random tokens, built as `frugal bench train` builds them, and returns the device's ledger
    /// and the host's (what was offloaded).
    private func measure(_ plan: MemoryPlan.Configuration) throws -> (device: MemorySnapshot, host: MemorySnapshot) {
        let backend = CPUBackend()
        let full = plan.method == .full
        let decoder = Decoder.random(plan.model, on: backend, category: full ? .trainable : .weights,
                                     dtype: full ? plan.precision.createdDType : plan.baseDType,
                                     quantize: full ? nil : plan.quantize, seed: 1)
        let parameters: TrainableParameters
        switch plan.method {
        case let .lora(lora):
            parameters = try decoder.attachLoRA(lora, seed: 2, frozenLayers: plan.frozenLayers, shareBlockGradients: plan.fusedOptimizerStep,
                                                dtype: plan.precision.createdDType)
        case .full: parameters = try decoder.allWeights(shareBlockGradients: plan.fusedOptimizerStep)
        }
        var training = TrainingConfiguration()
        training.method = plan.method
        training.steps = 2
        training.microBatch = plan.microBatch
        training.precision = plan.precision
        training.optimizer = plan.optimizer
        training.checkpointing = plan.checkpointing
        training.fusedOptimizerStep = plan.fusedOptimizerStep
        training.offloadOptimizer = plan.offloadOptimizer
        training.offloadActivations = plan.offloadActivations
        training.activations = plan.activations
        training.schedule = .constant
        training.learningRate = 1e-4
        training.maxGradientNorm = 0
        var random = SplitMix64(seed: 3)
        let sequences = (0..<(2 * plan.microBatch)).map { _ in
            let ids = (0...plan.sequenceLength).map { _ in Int32(random.next() % UInt64(plan.model.vocabSize)) }
            return TokenizedExample(tokens: Array(ids.dropLast()), targets: Array(ids.dropFirst()))
        }
        let loader = try DataLoader(sequences: sequences, batchSize: plan.microBatch,
                                    strategy: .padding(length: plan.sequenceLength), shuffle: false)
        let trainer = try Trainer(decoder: decoder, parameters: parameters, configuration: training, loader: loader)
        while !trainer.isFinished { _ = try trainer.trainStep() }
        return (backend.ledger.snapshot, backend.hostLedger.snapshot)
    }

    /// Prints predicted against measured peaks, category by category, and asserts weights,
    /// trainable, gradients and optimizer within 1%, activations, workspace and the total within
    /// 10% — the categories in `exact` to the byte.
    private func compare(_ plan: MemoryPlan, measured: [MemoryCategory: Int], total: Int?, _ name: String,
                         skipping: Set<MemoryCategory> = [], exact: Set<MemoryCategory> = [],
                         file: StaticString = #filePath, line: UInt = #line) {
        func gib(_ bytes: Int) -> String { String(format: "%8.4f GiB", Double(bytes) / Double(1 << 30)) }
        var lines = ["\(name):"]
        for category in MemoryCategory.allCases {
            let p = plan.peak[category, default: 0], m = measured[category, default: 0]
            lines.append("  \(category.rawValue.padding(toLength: 12, withPad: " ", startingAt: 0)) predicted \(gib(p))  measured \(gib(m))")
            if skipping.contains(category) { continue }
            let tolerance = exact.contains(category) ? 0 : category == .activations || category == .workspace ? 0.1 : 0.01
            XCTAssertEqual(Double(p), Double(m), accuracy: tolerance * Double(max(m, 1)), "\(name): \(category.rawValue)",
                           file: file, line: line)
        }
        print(lines.joined(separator: "\n") + "\n  total        predicted \(gib(plan.peakTotal))" + (total.map { "  measured \(gib($0))" } ?? ""))
        guard let total else { return }
        XCTAssertEqual(Double(plan.peakTotal), Double(total), accuracy: 0.1 * Double(total), "\(name): total", file: file, line: line)
    }

    private func checkAgainstLedger(_ configuration: MemoryPlan.Configuration, _ name: String,
                                    file: StaticString = #filePath, line: UInt = #line) throws {
        let plan = try MemoryPlan.predict(configuration)
        let measured = try measure(configuration)
        // Activations to the byte: the plan follows every tensor the forward keeps and the backward makes.
        compare(plan, measured: measured.device.peak, total: measured.device.peakTotal, name, exact: [.activations],
                file: file, line: line)
        // Host memory: exact counts of what was offloaded (persistent, or every block input at once).
        for category in MemoryCategory.allCases {
            let p = plan.hostPeak[category, default: 0], m = measured.host.peak[category, default: 0]
            if p > 0 || m > 0 { print("  host \(category.rawValue): predicted \(p) bytes, measured \(m)") }
            XCTAssertEqual(Double(p), Double(m), accuracy: 0.01 * Double(max(m, 1)), "\(name): host \(category.rawValue)",
                           file: file, line: line)
        }
    }

    private func cpu(_ method: TrainingMethod, precision: PrecisionPolicy = .fp32, base: DType = .f32, quantize: DType? = nil,
                     optimizer: OptimizerKind = .adamW, checkpointing: Bool) -> MemoryPlan.Configuration {
        MemoryPlan.Configuration(model: Self.shape, baseDType: base, quantize: quantize, method: method, precision: precision, optimizer: optimizer,
                                 microBatch: 2, sequenceLength: 64, checkpointing: checkpointing, device: .cpu)
    }

    private let qkv = TrainingMethod.lora(LoRAConfiguration(rank: 16, alpha: 32, targets: ["q", "k", "v"]))

    func testLoRAAgainstLedger() throws {
        try checkAgainstLedger(cpu(qkv, checkpointing: false), "LoRA q,k,v r16 fp32, batch 2 × 64")
    }

    func testLoRACheckpointedAgainstLedger() throws {
        try checkAgainstLedger(cpu(qkv, checkpointing: true), "LoRA q,k,v r16 fp32, batch 2 × 64, checkpointing")
    }

    func testFullAgainstLedger() throws {
        try checkAgainstLedger(cpu(.full, checkpointing: false), "full fp32 AdamW, batch 2 × 64")
    }

    func testFullCheckpointedAgainstLedger() throws {
        try checkAgainstLedger(cpu(.full, checkpointing: true), "full fp32 AdamW, batch 2 × 64, checkpointing")
    }

    /// bf16 with a bf16 base: f32 masters in the optimizer, half-size frozen weights.
    func testLoRAAllLinearBF16AgainstLedger() throws {
        let method = TrainingMethod.lora(LoRAConfiguration(rank: 8, alpha: 16, targets: ["all-linear"]))
        try checkAgainstLedger(cpu(method, precision: .bf16, base: .bf16, checkpointing: false),
                               "LoRA all-linear r8 bf16 (bf16 base), batch 2 × 64")
        try checkAgainstLedger(cpu(method, precision: .bf16, base: .bf16, checkpointing: true),
                               "LoRA all-linear r8 bf16 (bf16 base), batch 2 × 64, checkpointing")
    }

    /// Pure bf16: the trainable tensors stored in bf16 (half of fp32's trainable bytes), no
    /// masters; a full fine-tune (its weights widened whole where the CPU's GEMMs read them) and
    /// LoRA on a bf16 base, then with the optimizer offloaded (its f32 copies on the host).
    func testPureBF16AgainstLedger() throws {
        let full = cpu(.full, precision: .pureBF16, checkpointing: false)
        try checkAgainstLedger(full, "full pure-bf16 AdamW, batch 2 × 64")
        let fp32 = try MemoryPlan.predict(cpu(.full, checkpointing: false))
        let pure = try MemoryPlan.predict(full)
        XCTAssertEqual(2 * pure.peak[.trainable]!, fp32.peak[.trainable]!)
        let method = TrainingMethod.lora(LoRAConfiguration(rank: 8, alpha: 16, targets: ["all-linear"]))
        var lora = cpu(method, precision: .pureBF16, base: .bf16, checkpointing: true)
        try checkAgainstLedger(lora, "LoRA all-linear r8 pure-bf16 (bf16 base), batch 2 × 64, checkpointing")
        lora.offloadOptimizer = true
        try checkAgainstLedger(lora, "LoRA all-linear r8 pure-bf16 (bf16 base), optimizer offloaded")
        var offloaded = full
        offloaded.checkpointing = true
        offloaded.offloadOptimizer = true
        try checkAgainstLedger(offloaded, "full pure-bf16 AdamW, checkpointing, optimizer offloaded")
    }

    /// Forward activations stored in 16 bits under fp32 training: bf16 keeping every tape, f16
    /// with checkpointing and the kept inputs offloaded.
    func testSixteenBitActivationsAgainstLedger() throws {
        var plan = cpu(qkv, checkpointing: false)
        plan.activations = .bf16
        try checkAgainstLedger(plan, "LoRA q,k,v r16 fp32, bf16 activations, batch 2 × 64")
        plan = cpu(.full, checkpointing: true)
        plan.activations = .f16
        plan.offloadActivations = true
        try checkAgainstLedger(plan, "full fp32, f16 activations, batch 2 × 64, checkpointing, inputs offloaded")
        // A vocabulary of 512: the logits' chunk no longer hides the f32 copies of 16-bit
        // activations that the CPU's GEMMs read.
        plan = cpu(qkv, checkpointing: false)
        plan.model.vocabSize = 512
        plan.activations = .bf16
        try checkAgainstLedger(plan, "LoRA q,k,v r16 fp32, bf16 activations, vocabulary 512, batch 2 × 64")
    }

    /// A base quantized on load: under nf4 only the MLP's down projection (inputs 1536) has rows of
    /// whole blocks at SmolLM2's width 576; under q8_0 every projection does.
    func testLoRAQuantizedBaseAgainstLedger() throws {
        for dtype in [DType.nf4, .q8_0] {
            try checkAgainstLedger(cpu(qkv, quantize: dtype, checkpointing: false), "LoRA q,k,v r16 fp32, \(dtype.rawValue) base projections, batch 2 × 64")
        }
    }

    /// SGD keeps one buffer per value; bf16 adds the masters.
    func testFullSGDBF16AgainstLedger() throws {
        try checkAgainstLedger(cpu(.full, precision: .bf16, optimizer: .sgd, checkpointing: true),
                               "full bf16 SGD, batch 2 × 64, checkpointing")
    }

    /// 8-bit AdamW keeps its moments in 260-byte blocks of 256 values per tensor (norms pad).
    func testFullAdamW8bitAgainstLedger() throws {
        try checkAgainstLedger(cpu(.full, optimizer: .adamW8bit, checkpointing: true),
                               "full fp32 8-bit AdamW, batch 2 × 64, checkpointing")
    }

    /// The optimizer step fused into backward: one block's gradients and those outside the blocks
    /// (the tied embedding, the final norm), with 8-bit AdamW — the 8B full fine-tune's recipe.
    func testFullFusedStepAgainstLedger() throws {
        var configuration = cpu(.full, optimizer: .adamW8bit, checkpointing: true)
        configuration.fusedOptimizerStep = true
        try checkAgainstLedger(configuration, "full fp32 8-bit AdamW, fused step, batch 2 × 64, checkpointing")
        var lora = cpu(qkv, checkpointing: false)
        lora.fusedOptimizerStep = true
        try checkAgainstLedger(lora, "LoRA q,k,v r16 fp32, fused step, batch 2 × 64")
        // At Llama-3.1-8B's shape the gradients shrink from every weight's (30 GiB) to one block's and
        // the untied embedding and head's (5 GiB).
        var eight = MemoryPlan.Configuration(model: ModelConfiguration.named("llama3.1-8b")!, method: .full, precision: .pureBF16,
                                             optimizer: .adamW8bit, microBatch: 1, sequenceLength: 2048, checkpointing: true)
        let unfused = try MemoryPlan.predict(eight).peak[.gradients]!
        eight.fusedOptimizerStep = true
        let fused = try MemoryPlan.predict(eight).peak[.gradients]!
        XCTAssertGreaterThan(Double(unfused) / Double(1 << 30), 29)
        XCTAssertLessThan(Double(fused) / Double(1 << 30), 5.5)
    }

    /// The optimizer offloaded: no optimizer memory on the device, its state, an f32 copy of every
    /// weight and one gradient buffer on the host; with activation offload too, the block inputs.
    func testOffloadAgainstLedger() throws {
        var full = cpu(.full, optimizer: .adamW8bit, checkpointing: true)
        full.fusedOptimizerStep = true
        full.offloadOptimizer = true
        full.offloadActivations = true
        try checkAgainstLedger(full, "full fp32 8-bit AdamW, fused step, optimizer and activations offloaded, batch 2 × 64, checkpointing")
        var lora = cpu(qkv, precision: .bf16, checkpointing: false)
        lora.offloadOptimizer = true
        try checkAgainstLedger(lora, "LoRA q,k,v r16 bf16, optimizer offloaded, batch 2 × 64")
        var activations = cpu(qkv, checkpointing: true)
        activations.offloadActivations = true
        try checkAgainstLedger(activations, "LoRA q,k,v r16 fp32, activations offloaded, batch 2 × 64, checkpointing")
    }

    /// LoRA with frozen blocks (`--freeze-layers`): the blocks below the lowest adapted one keep
    /// nothing, a frozen block above it keeps a tape without adapters, and a frozen top block,
    /// checkpointed, recomputes a smaller tape than the highest trained block below it, whose
    /// backward finds the checkpoints above it freed.
    func testFrozenLayersAgainstLedger() throws {
        let allLinear = TrainingMethod.lora(LoRAConfiguration(rank: 16, alpha: 32, targets: ["all-linear"]))
        let runs: [(TrainingMethod, Set<Int>, Bool)] = [(qkv, [0, 1], false), (qkv, [0, 2], true), (allLinear, [1, 3], false),
                                                       (allLinear, [0, 3], true)]
        for (method, frozen, checkpointing) in runs {
            var configuration = cpu(method, checkpointing: checkpointing)
            configuration.frozenLayers = frozen
            try checkAgainstLedger(configuration, "LoRA \(method == qkv ? "q,k,v" : "all-linear") r16 fp32, blocks \(frozen.sorted()) frozen, batch 2 × 64\(checkpointing ? ", checkpointing" : "")")
        }
        var offloaded = cpu(qkv, checkpointing: true)
        offloaded.frozenLayers = [0, 3]
        offloaded.offloadActivations = true
        try checkAgainstLedger(offloaded, "LoRA q,k,v r16 fp32, blocks [0, 3] frozen, activations offloaded, batch 2 × 64, checkpointing")
    }

    /// Two frozen lower blocks save their backward: per block, the input gradients of its frozen
    /// projections (2 FLOPs a multiply-add of 3,538,944), attention's backward (2 × 4 × seq 64 ×
    /// 9 heads × 64) and their adapters' 6 FLOPs a value (16 × (576 + 576) + 2 × 16 × (576 + 192)).
    func testFrozenLowerLayersSaveTheirBackwardFLOPs() throws {
        let all = try MemoryPlan.predict(cpu(qkv, checkpointing: false))
        var configuration = cpu(qkv, checkpointing: false)
        configuration.frozenLayers = [0, 1]
        let frozen = try MemoryPlan.predict(configuration)
        XCTAssertEqual(all.flopsPerToken - frozen.flopsPerToken, 2 * (2 * 3_538_944 + 2 * 147_456 + 6 * 43_008))
        XCTAssertEqual(frozen.trainableCount, all.trainableCount / 2)
        configuration.frozenLayers = [0, 1, 2, 3]
        XCTAssertThrowsError(try MemoryPlan.predict(configuration))
        configuration.frozenLayers = [4]
        XCTAssertThrowsError(try MemoryPlan.predict(configuration))
    }

    /// GPT-2's layout (LayerNorm with biases, a plain GELU MLP, biases everywhere, learned
    /// positions, tied embeddings) at a small width.
    func testGPT2LayoutAgainstLedger() throws {
        let gpt2 = ModelConfiguration(architecture: .gpt2, modelType: "gpt2", vocabSize: 8192, hiddenSize: 256,
                                      intermediateSize: 1024, layers: 4, heads: 4, kvHeads: 4, headDim: 64, maxPositions: 256,
                                      normEps: 1e-5, normKind: .layer, activation: .geluTanh, gatedMLP: false,
                                      tiedEmbeddings: true, attentionBias: true, outputBias: true, mlpBias: true,
                                      learnedPositions: true)
        try checkLayoutAgainstLedger(gpt2, "GPT-2", [(.full, false), (qkv, true)])
    }

    /// OPT-350m's layout (post-norm, a plain relu MLP whose backward reads the product instead of
    /// up, narrower embeddings projected in and out, no final norm) at a small width: a full
    /// fine-tune, and LoRA on q,k,v, whose frozen down projection still has its input kept for
    /// the activation's backward; the last block's output is the head's input only, in f32 or
    /// widened from bf16.
    func testOPTLayoutAgainstLedger() throws {
        var opt = ModelConfiguration.opt350M
        opt.vocabSize = 8192; opt.hiddenSize = 256; opt.intermediateSize = 1024; opt.layers = 4; opt.heads = 4
        opt.kvHeads = 4; opt.wordEmbedProjDim = 128
        try checkLayoutAgainstLedger(opt, "OPT", [(.full, false), (qkv, false), (qkv, true)])
        try checkLayoutAgainstLedger(opt, "OPT", [(.full, false), (qkv, true)], activations: .bf16)
    }

    private func checkLayoutAgainstLedger(_ model: ModelConfiguration, _ name: String, _ runs: [(TrainingMethod, Bool)],
                                          activations: DType = .f32, file: StaticString = #filePath, line: UInt = #line) throws {
        for (method, checkpointing) in runs {
            var configuration = cpu(method, checkpointing: checkpointing)
            configuration.model = model
            configuration.activations = activations
            try checkAgainstLedger(configuration, "\(name) layout, \(method == .full ? "full" : "LoRA q,k,v") fp32, \(activations) activations, batch 2 × 64\(checkpointing ? ", checkpointing" : "")",
                                   file: file, line: line)
        }
    }

    // MARK: - H100 runs (BENCH.md W1 and W2)

    /// Frugal's rows of a result file in bench/results (`bench/run-gpu`, which runs `frugal bench
    /// train --device cuda`), by workload name.
    private func h100Rows(_ file: String) throws -> [String: [String: Any]] {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("bench/results/\(file)")
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any]
        let rows = try XCTUnwrap(object?["rows"] as? [[String: Any]], "no rows in \(url.path)")
        return Dictionary(rows.filter { $0["system"] as? String == "frugal" }.map { ($0["workload"] as! String, $0) },
                          uniquingKeysWith: { a, _ in a })
    }

    /// Compares `configuration`'s plan with the measured row `workload` of `file`.
    /// The categories in `skipping` go unchecked, and the total too unless `checkingTotal`.
    private func checkAgainstH100(_ configuration: MemoryPlan.Configuration, _ file: String, _ workload: String,
                                  skipping: Set<MemoryCategory> = [], checkingTotal: Bool = true,
                                  file testFile: StaticString = #filePath, line: UInt = #line) throws {
        let row = try XCTUnwrap(try h100Rows(file)[workload], "no frugal \(workload) row in \(file)")
        XCTAssertEqual(row["checkpointing"] as? Bool, configuration.checkpointing, file: testFile, line: line)
        XCTAssertEqual(row["batch"] as? Int, configuration.microBatch, file: testFile, line: line)
        XCTAssertEqual(row["seq"] as? Int, configuration.sequenceLength, file: testFile, line: line)
        XCTAssertEqual(row["precision"] as? String, configuration.precision.rawValue, file: testFile, line: line)
        let gib = Double(1 << 30)
        let byCategory = try XCTUnwrap(row["peak_by_category_gib"] as? [String: Double])
        let measured = Dictionary(uniqueKeysWithValues: byCategory.map { (MemoryCategory(rawValue: $0.key)!, Int($0.value * gib)) })
        let total = Int(try XCTUnwrap(row["ledger_peak_gib"] as? Double) * gib)
        compare(try MemoryPlan.predict(configuration), measured: measured, total: checkingTotal ? total : nil, "H100 \(workload) (\(file))",
                skipping: skipping, file: testFile, line: line)
    }

    /// W1: Llama-3.1-8B's shape, LoRA r16 on every projection, bf16 (bf16 base), batch 4 × 1024.
    private func w1(checkpointing: Bool, batch: Int = 4) -> MemoryPlan.Configuration {
        MemoryPlan.Configuration(model: .llama31_8B, baseDType: .bf16,
                                 method: .lora(LoRAConfiguration(rank: 16, alpha: 32, targets: ["all-linear"])),
                                 precision: .bf16, microBatch: batch, sequenceLength: 1024, checkpointing: checkpointing,
                                 activations: .f32, device: .cuda)
    }

    /// The checkpointed run kept the head's f32 tensors (the last output, the final norm's, the hidden
    /// states' gradient: 256 MiB here) through the blocks' backward, which now frees them: its
    /// activations, 10% above this version's, go unchecked until the row is measured again.
    func testLlama31LoRAAgainstH100() throws {
        try checkAgainstH100(w1(checkpointing: false), "2026-11-22-h100-perf-w1.json", "W1")
        try checkAgainstH100(w1(checkpointing: true), "2026-11-22-h100-perf-w1.json", "W1-ckpt", skipping: [.activations])
    }

    /// W2: Llama-2-7B's shape, LoRA r16 on q, k, v, batch 8 × 256, fp32 (f32 base) and bf16 (bf16 base).
    /// These runs held the attention's scores for whole sequences, before they went a query block at
    /// a time (`AttentionLayout.queryBlockSize`), and kept the inputs of the frozen gate, up and down
    /// projections, which this version drops (`Decoder.keepsInput`: 3.7 GiB at fp32): their
    /// workspace and activations are no longer this version's and go unchecked, with the total,
    /// until the rows are measured again.
    func testLlama2LoRAAgainstH100() throws {
        for (precision, base) in [(PrecisionPolicy.fp32, DType.f32), (.bf16, .bf16)] {
            let configuration = MemoryPlan.Configuration(
                model: .llama2_7B, baseDType: base, method: .lora(LoRAConfiguration(rank: 16, alpha: 32, targets: ["q", "k", "v"])),
                precision: precision, microBatch: 8, sequenceLength: 256, activations: .f32, device: .cuda)
            try checkAgainstH100(configuration, "2026-11-22-h100-perf-w2.json", "W2-\(precision.rawValue)-ga1",
                                 skipping: [.workspace, .activations], checkingTotal: false)
        }
    }

    /// The fastest plan that fits: no checkpointing at a smaller batch beats checkpointing at a
    /// larger one; checkpointing only when nothing else fits.
    func testFastestPrefersNoCheckpointingThenLargerBatch() throws {
        let plans = try [false, true].flatMap { checkpointing in
            try [4, 2, 1].map { try MemoryPlan.predict(w1(checkpointing: checkpointing, batch: $0)) }
        }
        let gib = 1 << 30
        func pick(_ budget: Int) -> String? {
            MemoryPlan.fastest(plans, fitting: budget * gib).map {
                "\($0.configuration.checkpointing ? "checkpointing" : "none") \($0.configuration.microBatch)"
            }
        }
        XCTAssertEqual(pick(80), "none 4")
        XCTAssertEqual(pick(40), "none 2")
        XCTAssertEqual(pick(22), "checkpointing 4")
        XCTAssertNil(pick(10))
    }
}
