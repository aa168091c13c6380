// Losses and gradients of tiny random-weight models of every family against PyTorch, for a full
// fine-tune and for LoRA (reference: scripts/make_gradient_fixtures.py, transformers and PEFT).
import XCTest
import FrugalCore
import FrugalCPU
import FrugalFormats
@testable import FrugalModels

final class DecoderGradientTests: XCTestCase {
    static let fixtures = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("models")
    /// Largest allowed |frugal - torch| of any gradient value.
    static let gradientTolerance: Float = 1e-4
    /// Largest allowed relative difference of the mean loss.
    static let lossTolerance = 1e-5

    /// A fixture model's batch and its reference gradients.
    private struct Fixture {
        let folder: URL
        let reference: SafeTensorsFile
        let batch: TrainingBatch

        init(_ name: String) throws {
            folder = DecoderGradientTests.fixtures.appendingPathComponent(name)
            let expected = try SafeTensorsFile(path: folder.appendingPathComponent("expected.safetensors").path)
            reference = try SafeTensorsFile(path: folder.appendingPathComponent("gradients.safetensors").path)
            let tokens = try expected.floats("input_ids").map { Int32($0) }
            let targets = try reference.floats("targets").map { Int32($0) }
            batch = TrainingBatch(tokens: tokens, targets: targets, batch: try expected.info("input_ids").shape[0])
        }

        /// The reference tensors whose names start with `prefix`, keyed by the rest of the name.
        func names(_ prefix: String) -> [String] {
            reference.names.filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) }.sorted()
        }

        /// Runs forward and backward with the mean-loss scale; returns the mean loss.
        func meanLoss(_ decoder: Decoder, _ parameters: TrainableParameters, options: PassOptions? = nil,
                      seed: UInt64 = 0) -> Double {
            var random = SplitMix64(seed: seed)
            let count = batch.targetCount
            let options = options ?? PassOptions(checkpointing: false, gradientScale: 1 / Float(count), training: false)
            return decoder.accumulateGradients(batch, into: parameters, options: options, random: &random) / Double(count)
        }
    }

    // MARK: - Full fine-tune

    /// Every gradient the fixture stores (`full.<hf name>`) against Frugal's full fine-tune.
    private func checkFullFineTune(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let fixture = try Fixture(name)
        let decoder = try ModelFiles(path: fixture.folder.path).decoder(on: CPUBackend(), trainable: true)
        let parameters = try decoder.allWeights()
        let loss = fixture.meanLoss(decoder, parameters)
        try checkLoss(loss, fixture.reference.floats("loss_full")[0], "\(name) full", file: file, line: line)

        var gradients = [String: [Float]]()
        for p in parameters.parameters { gradients[p.name] = decoder.backend.download(p.gradient) }
        let gpt2 = decoder.configuration.architecture == .gpt2
        let stored = fixture.names("full.")
        XCTAssertFalse(stored.isEmpty, "\(name): no full gradients in the fixture", file: file, line: line)
        for hfName in stored {
            guard let roles = Self.frugalNames(hfName) else {
                XCTFail("\(name): no Frugal role for '\(hfName)'", file: file, line: line); continue
            }
            var reference = try fixture.reference.floats("full." + hfName)
            let shape = try fixture.reference.info("full." + hfName).shape
            // GPT-2's Conv1D weights are (inputs, outputs); Frugal's are (outputs, inputs).
            if gpt2 && shape.rank == 2 && Self.isBlockTensor(hfName) {
                reference = Self.transposed(reference, rows: shape[0], columns: shape[1])
            }
            var frugal = [Float]()
            for role in roles {
                guard let g = gradients[role] else {
                    XCTFail("\(name): Frugal has no trainable '\(role)' (for '\(hfName)')", file: file, line: line); break
                }
                frugal += g  // fused projections: concatenated by rows
            }
            compare(frugal, reference, "\(name) full '\(hfName)' (\(roles.joined(separator: "+")))", file: file, line: line)
        }
    }

    func testLlama3FullFineTune() throws { try checkFullFineTune("llama3") }
    func testQwen2FullFineTune() throws { try checkFullFineTune("qwen2") }
    func testGemmaFullFineTune() throws { try checkFullFineTune("gemma") }
    func testPhi3FullFineTune() throws { try checkFullFineTune("phi3") }
    func testOPTFullFineTune() throws { try checkFullFineTune("opt") }
    func testOPTPreNormFullFineTune() throws { try checkFullFineTune("opt-prenorm") }
    func testGPT2FullFineTune() throws { try checkFullFineTune("gpt2") }

    // MARK: - LoRA

    /// Attaches adapters to `targets`, sets A and B from the fixture (PEFT's values) and
    /// compares the loss and every A and B gradient.
    private func checkLoRA(_ name: String, targets: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let fixture = try Fixture(name)
        let decoder = try ModelFiles(path: fixture.folder.path).decoder(on: CPUBackend())
        let parameters = try decoder.attachLoRA(LoRAConfiguration(rank: 4, alpha: 8, dropout: 0, targets: targets), seed: 7)
        XCTAssertEqual(parameters.parameters.map(\.name).sorted(), fixture.names("lora."),
                       "\(name): Frugal's adapters differ from PEFT's", file: file, line: line)
        try loadAdapters(parameters, from: fixture)
        let loss = fixture.meanLoss(decoder, parameters)
        try checkLoss(loss, fixture.reference.floats("loss_lora")[0], "\(name) LoRA", file: file, line: line)
        for p in parameters.parameters where fixture.reference.contains("lora_grad." + p.name) {
            compare(decoder.backend.download(p.gradient), try fixture.reference.floats("lora_grad." + p.name),
                    "\(name) LoRA '\(p.name)'", file: file, line: line)
        }
    }

    private static let allLinear = ["all-linear"]

    func testLlama3LoRA() throws { try checkLoRA("llama3", targets: Self.allLinear) }
    func testQwen2LoRA() throws { try checkLoRA("qwen2", targets: Self.allLinear) }
    func testGemmaLoRA() throws { try checkLoRA("gemma", targets: Self.allLinear) }
    /// PEFT adapts Phi-3's fused qkv_proj and gate_up_proj as a whole; Frugal adapts q, k, v
    /// (gate, up) separately, so only the unfused projections are compared.
    func testPhi3LoRA() throws { try checkLoRA("phi3", targets: ["o", "down"]) }
    func testOPTLoRA() throws { try checkLoRA("opt", targets: Self.allLinear) }
    func testOPTPreNormLoRA() throws { try checkLoRA("opt-prenorm", targets: Self.allLinear) }
    /// GPT-2's fused c_attn is left out, as with Phi-3 (attn.c_proj, mlp.c_fc, mlp.c_proj).
    func testGPT2LoRA() throws { try checkLoRA("gpt2", targets: ["o", "up", "down"]) }

    // MARK: - Checkpointing

    /// Recomputing each block in backward (with the same dropout masks) gives the same gradients:
    /// pre-norm (Llama, whose recompute skips the down projection's output) and post-norm (OPT,
    /// whose backward reads the block's last sum).
    func testCheckpointingGivesTheSameGradients() throws {
        try checkCheckpointing("llama3")
        try checkCheckpointing("opt")
    }

    private func checkCheckpointing(_ name: String) throws {
        let fixture = try Fixture(name)
        let decoder = try ModelFiles(path: fixture.folder.path).decoder(on: CPUBackend())
        let parameters = try decoder.attachLoRA(LoRAConfiguration(rank: 4, alpha: 8, dropout: 0.1, targets: Self.allLinear),
                                                seed: 7)
        try loadAdapters(parameters, from: fixture)
        let scale = 1 / Float(fixture.batch.targetCount)
        func gradients(checkpointing: Bool, training: Bool = true) -> (Double, [[Float]]) {
            parameters.zeroGradients()
            let options = PassOptions(checkpointing: checkpointing, gradientScale: scale, training: training)
            let loss = fixture.meanLoss(decoder, parameters, options: options, seed: 0)
            return (loss, parameters.parameters.map { decoder.backend.download($0.gradient) })
        }
        let (loss, plain) = gradients(checkpointing: false)
        let (checkpointedLoss, checkpointed) = gradients(checkpointing: true)
        XCTAssertEqual(loss, checkpointedLoss)
        // The recomputed blocks repeat the same ops in the same order: bit-for-bit equal.
        for (p, (a, b)) in zip(parameters.parameters, zip(plain, checkpointed)) {
            compare(b, a, "\(name) checkpointed '\(p.name)'", tolerance: 0)
        }
        // Dropout did apply: without it the gradients differ.
        let (_, evaluation) = gradients(checkpointing: false, training: false)
        XCTAssertNotEqual(plain, evaluation, "\(name): dropout 0.1 in training changed nothing")
        XCTAssertTrue(plain.contains { $0.contains { $0 != 0 } }, "\(name): all gradients are zero")
    }

    // MARK: - Frozen lower layers

    /// With block 0 frozen (`frozenLayers`), the pass keeps no tape for it and stops backward at
    /// block 1: block 1's gradients are bit for bit those of a pass that goes through block 0
    /// (whose adapters are attached but disabled), with and without checkpointing, and the
    /// activations' peak is lower.
    /// `--freeze-layers` naming a block the model lacks is an error, not silently ignored.
    func testFreezingAMissingBlockIsAnError() throws {
        let decoder = try ModelFiles(path: try Fixture("llama3").folder.path).decoder(on: CPUBackend())
        let missing = decoder.weights.blocks.count
        for attempt in [{ try decoder.attachLoRA(LoRAConfiguration(), seed: 1, frozenLayers: [0, missing]) },
                        { try decoder.allWeights(frozenLayers: [missing]) }] {
            XCTAssertThrowsError(try attempt()) { error in
                XCTAssertTrue("\(error)".contains("frozen layer \(missing) is not a block"), "\(error)")
            }
        }
    }

    func testFrozenLowerLayersSkipTheirBackward() throws {
        for name in ["llama3", "opt"] {
            for checkpointing in [false, true] { try checkFrozenLowerLayers(name, checkpointing: checkpointing) }
        }
    }

    private func checkFrozenLowerLayers(_ name: String, checkpointing: Bool) throws {
        let fixture = try Fixture(name)
        let lora = LoRAConfiguration(rank: 4, alpha: 8, dropout: 0.1, targets: Self.allLinear)
        let options = PassOptions(checkpointing: checkpointing, gradientScale: 1 / Float(fixture.batch.targetCount), training: true)
        func run(frozen: Bool) throws -> (first: Int, gradients: [String: [Float]], activations: Int) {
            let backend = CPUBackend()
            let decoder = try ModelFiles(path: fixture.folder.path).decoder(on: backend)
            let parameters = try decoder.attachLoRA(lora, seed: 7, frozenLayers: frozen ? [0] : [])
            try loadAdapters(parameters, from: fixture)
            if !frozen { for role in ProjectionRole.allCases { decoder.weights.blocks[0][role]?.lora?.enabled = false } }
            _ = fixture.meanLoss(decoder, parameters, options: options, seed: 3)
            let gradients = Dictionary(uniqueKeysWithValues: parameters.parameters.map { ($0.name, backend.download($0.gradient)) })
            return (decoder.firstBackwardBlock(parameters), gradients, backend.ledger.snapshot.peak[.activations] ?? 0)
        }
        let label = "\(name)\(checkpointing ? ", checkpointing" : "")"
        let through = try run(frozen: false), frozen = try run(frozen: true)
        XCTAssertEqual(through.first, 0, label)
        XCTAssertEqual(frozen.first, 1, label)
        XCTAssertFalse(frozen.gradients.isEmpty, label)
        for (parameter, gradient) in frozen.gradients {
            XCTAssertTrue(gradient.contains { $0 != 0 }, "\(label) '\(parameter)': zero gradient")
            compare(gradient, through.gradients[parameter] ?? [], "\(label) '\(parameter)'", tolerance: 0)
        }
        XCTAssertLessThan(frozen.activations, through.activations, "\(label): activations' peak")
    }

    // MARK: - Helpers

    /// Copies the fixture's PEFT adapter values (`lora.<name>`) into Frugal's A and B.
    private func loadAdapters(_ parameters: TrainableParameters, from fixture: Fixture) throws {
        for p in parameters.parameters {
            let values = try fixture.reference.floats("lora." + p.name)
            XCTAssertEqual(values.count, p.value.count, "'\(p.name)' shape \(p.value.shape)")
            let buffer = p.value.floats
            for i in 0..<min(values.count, buffer.count) { buffer[i] = values[i] }
        }
    }

    private func checkLoss(_ loss: Double, _ reference: Float, _ label: String, file: StaticString, line: UInt) throws {
        let relative = abs(loss - Double(reference)) / abs(Double(reference))
        XCTAssertLessThanOrEqual(relative, Self.lossTolerance, "\(label): loss \(loss), torch \(reference)", file: file, line: line)
    }

    private func compare(_ frugal: [Float], _ reference: [Float], _ label: String, tolerance: Float = DecoderGradientTests.gradientTolerance,
                         file: StaticString = #filePath, line: UInt = #line) {
        guard frugal.count == reference.count else {
            XCTFail("\(label): \(frugal.count) values, torch \(reference.count)", file: file, line: line); return
        }
        var worst: Float = 0, worstIndex = 0, largest: Float = 0
        for i in frugal.indices {
            let d = abs(frugal[i] - reference[i])
            if !(d <= worst) { worst = d; worstIndex = i }  // NaN counts as worst
            largest = max(largest, abs(reference[i]))
        }
        XCTAssertLessThanOrEqual(worst, tolerance,
                                 "\(label): max |frugal - torch| = \(worst) at \(worstIndex) (frugal \(frugal[worstIndex]), torch \(reference[worstIndex]); max |torch| = \(largest))",
                                 file: file, line: line)
    }

    private static func transposed(_ values: [Float], rows: Int, columns: Int) -> [Float] {
        var out = [Float](repeating: 0, count: values.count)
        for r in 0..<rows { for c in 0..<columns { out[c * rows + r] = values[r * columns + c] } }
        return out
    }

    /// The block index and the rest of a Hugging Face name (`model.layers.3.mlp.up_proj.weight`
    /// → 3, `mlp.up_proj.weight`), or nil outside the blocks.
    private static func blockPath(_ name: String) -> (Int, String)? {
        let parts = name.split(separator: ".").map(String.init)
        for i in 0..<(parts.count - 1) where (parts[i] == "layers" || parts[i] == "h") {
            if let index = Int(parts[i + 1]) { return (index, parts[(i + 2)...].joined(separator: ".")) }
        }
        return nil
    }

    private static func isBlockTensor(_ name: String) -> Bool { blockPath(name) != nil }

    /// Frugal's role names (`DecoderWeights.namedTensors`) whose rows, concatenated, make the
    /// Hugging Face tensor `name`; written out per family rather than taken from `TensorNaming`.
    static func frugalNames(_ name: String) -> [String]? {
        let suffix = name.hasSuffix(".bias") ? "bias" : "weight"
        let module = String(name.dropLast(suffix.count + 1))
        if let (index, path) = blockPath(module) {
            let roles: [String]
            switch path {
            case "input_layernorm", "self_attn_layer_norm", "ln_1": roles = ["attention_norm"]
            case "self_attn.q_proj": roles = ["query"]
            case "self_attn.k_proj": roles = ["key"]
            case "self_attn.v_proj": roles = ["value"]
            case "self_attn.qkv_proj", "attn.c_attn": roles = ["query", "key", "value"]
            case "self_attn.o_proj", "self_attn.out_proj", "attn.c_proj": roles = ["output"]
            case "post_attention_layernorm", "final_layer_norm", "ln_2": roles = ["mlp_norm"]
            case "mlp.gate_proj": roles = ["gate"]
            case "mlp.up_proj", "fc1", "mlp.c_fc": roles = ["up"]
            case "mlp.gate_up_proj": roles = ["gate", "up"]
            case "mlp.down_proj", "fc2", "mlp.c_proj": roles = ["down"]
            default: return nil
            }
            return roles.map { "blocks.\(index).\($0).\(suffix)" }
        }
        switch module {
        case "model.embed_tokens", "model.decoder.embed_tokens", "transformer.wte": return ["token_embedding"]
        case "model.decoder.embed_positions", "transformer.wpe": return ["position_embedding"]
        case "model.decoder.project_in": return ["project_in.\(suffix)"]
        case "model.decoder.project_out": return ["project_out.\(suffix)"]
        case "model.norm", "model.decoder.final_layer_norm", "transformer.ln_f": return ["final_norm.\(suffix)"]
        case "lm_head": return ["head"]
        default: return nil
        }
    }
}
