// PEFT and merged exports of the tiny fixture models: round trips through Frugal, and (where the
// oracle virtual environment exists) through Hugging Face PEFT and transformers.
import Foundation
import XCTest
import FrugalCore
import FrugalCPU
import FrugalFormats
@testable import FrugalModels

final class ExportTests: XCTestCase {
    static let fixtures = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("models")
    /// The repository root (for scripts/check_peft_export.py).
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    /// Python with torch, transformers and PEFT; the oracle checks skip when it is absent.
    static let oraclePython = "/work/oracle/bin/python"
    /// Two sequences of eight tokens (every fixture has a vocabulary of 256).
    static let tokens: [Int32] = [1, 17, 42, 99, 7, 250, 3, 64, 5, 128, 33, 200, 9, 77, 18, 2]
    static let batch = 2

    /// The unfused projections of each family, and every projection (fused ones included).
    static let unfused: [String: [String]] = [
        "llama3": ["all-linear"], "qwen2": ["all-linear"], "gemma": ["all-linear"], "opt": ["all-linear"],
        "opt-prenorm": ["all-linear"], "gpt2": ["o", "up", "down"], "phi3": ["o", "down"],
    ]

    /// A fresh temporary folder, removed when the test ends.
    private func temporaryFolder() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("frugal-export-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    private func files(_ name: String) throws -> ModelFiles {
        try ModelFiles(path: Self.fixtures.appendingPathComponent(name).path)
    }

    /// The fixture with LoRA on `targets` and random B (so the adapters change the logits).
    private func adapted(_ name: String, targets: [String], rank: Int = 4, alpha: Float = 8,
                         rsLoRA: Bool = false) throws -> (ModelFiles, Decoder, TrainableParameters) {
        let files = try files(name)
        let decoder = try files.decoder(on: CPUBackend())
        let lora = LoRAConfiguration(rank: rank, alpha: alpha, targets: targets, rankStabilized: rsLoRA)
        let parameters = try decoder.attachLoRA(lora, seed: 11)
        var random = SplitMix64(seed: 5)
        for p in parameters.parameters where p.name.hasSuffix("lora_B.weight") {
            let values = p.value.floats
            for i in values.indices { values[i] = (random.nextUniform() * 2 - 1) * 0.1 }
        }
        return (files, decoder, parameters)
    }

    private func logits(_ decoder: Decoder) -> [Float] {
        decoder.backend.download(decoder.logits(Self.tokens, batch: Self.batch))
    }

    private func maxDifference(_ a: [Float], _ b: [Float]) -> Float {
        precondition(a.count == b.count)
        return zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
    }

    // MARK: - PEFT round trip

    /// Export → load into a fresh decoder → the same adapters and logits.
    private func checkPEFTRoundTrip(_ name: String, targets: [String], rsLoRA: Bool = false, tolerance: Float = 0,
                                    file: StaticString = #filePath, line: UInt = #line) throws {
        let (files, decoder, parameters) = try adapted(name, targets: targets, rsLoRA: rsLoRA)
        let expected = logits(decoder)
        XCTAssertGreaterThan(maxDifference(expected, logits(try files.decoder(on: CPUBackend()))), 1e-3,
                             "\(name): the adapters do not change the logits", file: file, line: line)
        let folder = try temporaryFolder()
        try PEFTAdapter.export(decoder: decoder, parameters: parameters, baseModel: name, to: folder)

        let fresh = try files.decoder(on: CPUBackend())
        let loaded = try PEFTAdapter.load(from: folder, into: fresh)
        XCTAssertEqual(loaded.parameters.map(\.name).sorted(), parameters.parameters.map(\.name).sorted(), file: file, line: line)
        XCTAssertLessThanOrEqual(maxDifference(logits(fresh), expected), tolerance, "\(name) PEFT round trip", file: file, line: line)
    }

    func testLlama3PEFTRoundTrip() throws { try checkPEFTRoundTrip("llama3", targets: Self.unfused["llama3"]!) }
    func testQwen2PEFTRoundTrip() throws { try checkPEFTRoundTrip("qwen2", targets: Self.unfused["qwen2"]!) }
    func testGemmaPEFTRoundTrip() throws { try checkPEFTRoundTrip("gemma", targets: Self.unfused["gemma"]!) }
    func testOPTPEFTRoundTrip() throws { try checkPEFTRoundTrip("opt", targets: Self.unfused["opt"]!) }
    func testGPT2PEFTRoundTrip() throws { try checkPEFTRoundTrip("gpt2", targets: Self.unfused["gpt2"]!) }
    func testRankStabilizedPEFTRoundTrip() throws { try checkPEFTRoundTrip("llama3", targets: ["q", "v"], rsLoRA: true) }

    /// Fused projections become one PEFT module of summed rank (B block-diagonal); loading
    /// gives each part the whole A, so the logits agree up to summation order.
    func testPhi3FusedPEFTRoundTrip() throws { try checkPEFTRoundTrip("phi3", targets: ["all-linear"], tolerance: 1e-5) }
    func testGPT2FusedPEFTRoundTrip() throws { try checkPEFTRoundTrip("gpt2", targets: ["all-linear"], tolerance: 1e-5) }

    /// The config records what PEFT needs: rank, alpha, the modules, GPT-2's Conv1D layout,
    /// and per-module rank and alpha for fused projections.
    func testAdapterConfig() throws {
        let folder = try temporaryFolder()
        let (_, llama, _) = try adapted("llama3", targets: ["q", "v"])
        try PEFTAdapter.export(decoder: llama, baseModel: "base", to: folder.appendingPathComponent("llama"))
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("llama/adapter_config.json"))) as! [String: Any]
        XCTAssertEqual(config["r"] as? Int, 4)
        XCTAssertEqual(config["lora_alpha"] as? Double, 8)
        XCTAssertEqual(config["target_modules"] as? [String], ["q_proj", "v_proj"])
        XCTAssertEqual(config["fan_in_fan_out"] as? Bool, false)
        XCTAssertEqual((config["rank_pattern"] as? [String: Any])?.count, 0)

        let (_, gpt2, _) = try adapted("gpt2", targets: ["q", "k", "v", "o"])
        try PEFTAdapter.export(decoder: gpt2, baseModel: "base", to: folder.appendingPathComponent("gpt2"))
        config = try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("gpt2/adapter_config.json"))) as! [String: Any]
        XCTAssertEqual(config["fan_in_fan_out"] as? Bool, true)
        // "c_proj" would also pick the MLP's c_proj: the modules are named in full.
        XCTAssertEqual(config["target_modules"] as? [String],
                       ["transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj", "transformer.h.1.attn.c_attn", "transformer.h.1.attn.c_proj"])
        XCTAssertEqual(config["rank_pattern"] as? [String: Int], ["transformer.h.0.attn.c_attn": 12, "transformer.h.1.attn.c_attn": 12])
        XCTAssertEqual(config["alpha_pattern"] as? [String: Double], ["transformer.h.0.attn.c_attn": 24, "transformer.h.1.attn.c_attn": 24])
        let weights = try SafeTensorsFile(path: folder.appendingPathComponent("gpt2/adapter_model.safetensors").path)
        XCTAssertEqual(try weights.info("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight").shape, [12, 64])
        XCTAssertEqual(try weights.info("base_model.model.transformer.h.0.attn.c_attn.lora_B.weight").shape, [192, 12])
    }

    /// Re-exporting a loaded fused adapter keeps its rank: the parts share one A.
    func testReexportedFusedAdapterKeepsItsRank() throws {
        let (files, decoder, _) = try adapted("phi3", targets: ["q", "k", "v"])
        let first = try temporaryFolder(), second = try temporaryFolder()
        try PEFTAdapter.export(decoder: decoder, baseModel: "phi3", to: first)
        let fresh = try files.decoder(on: CPUBackend())
        try PEFTAdapter.load(from: first, into: fresh)
        try PEFTAdapter.export(decoder: fresh, baseModel: "phi3", to: second)
        let a = try SafeTensorsFile(path: first.appendingPathComponent("adapter_model.safetensors").path)
        let b = try SafeTensorsFile(path: second.appendingPathComponent("adapter_model.safetensors").path)
        XCTAssertEqual(a.names, b.names)
        for name in a.names {
            XCTAssertEqual(try a.info(name).shape, try b.info(name).shape, name)
            XCTAssertEqual(try a.floats(name), try b.floats(name), name)
        }
    }

    // MARK: - PEFT load errors

    func testLoadErrors() throws {
        let (_, gpt2, _) = try adapted("gpt2", targets: ["o"])
        let (_, llama, _) = try adapted("llama3", targets: ["q"])
        let gpt2Folder = try temporaryFolder(), llamaFolder = try temporaryFolder(), empty = try temporaryFolder()
        try PEFTAdapter.export(decoder: gpt2, baseModel: "gpt2", to: gpt2Folder)
        try PEFTAdapter.export(decoder: llama, baseModel: "llama3", to: llamaFolder)

        func message(_ folder: URL, _ model: String) -> String {
            do {
                try PEFTAdapter.load(from: folder, into: try files(model).decoder(on: CPUBackend()))
                return "loaded"
            } catch {
                return "\(error)"
            }
        }
        XCTAssertTrue(message(empty, "llama3").contains("adapter_config.json"), message(empty, "llama3"))
        XCTAssertTrue(message(gpt2Folder, "llama3").contains("transformer.h.0.attn.c_proj"), message(gpt2Folder, "llama3"))
        // Qwen2's fixture has the same module names but other widths.
        let mismatch = message(llamaFolder, "qwen2")
        XCTAssertTrue(mismatch.contains("lora_") && mismatch.contains("shape"), mismatch)
        try FileManager.default.removeItem(at: llamaFolder.appendingPathComponent("adapter_model.safetensors"))
        XCTAssertTrue(message(llamaFolder, "llama3").contains("adapter_model.safetensors"), message(llamaFolder, "llama3"))
    }

    // MARK: - Merged export

    /// Without adapters the export holds the checkpoint's own tensors (names, shapes, values):
    /// fused projections re-concatenated, GPT-2's Conv1D transposed back, the tied head left out.
    private func checkUnchangedExport(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let files = try files(name)
        let folder = try temporaryFolder()
        try MergedExport.write(decoder: try files.decoder(on: CPUBackend()), files: files, to: folder)
        let source = try SafeTensorsFile(path: Self.fixtures.appendingPathComponent(name + "/model.safetensors").path)
        let exported = try SafeTensorsFile(path: folder.appendingPathComponent("model.safetensors").path)
        // Buffers transformers does not load (GPT-2's causal mask) are not weights.
        let expectedNames = source.names.filter { !$0.hasSuffix(".attn.bias") && !$0.hasSuffix(".masked_bias") }.sorted()
        XCTAssertEqual(exported.names.sorted(), expectedNames, "\(name): tensor names", file: file, line: line)
        for tensor in expectedNames where exported.contains(tensor) {
            XCTAssertEqual(try exported.info(tensor).shape, try source.info(tensor).shape, "\(name) '\(tensor)'", file: file, line: line)
            XCTAssertEqual(try exported.floats(tensor), try source.floats(tensor), "\(name) '\(tensor)'", file: file, line: line)
        }
    }

    func testUnchangedExportOfEveryFamily() throws {
        for name in ["llama3", "qwen2", "gemma", "phi3", "opt", "opt-prenorm", "gpt2"] { try checkUnchangedExport(name) }
    }

    /// The merged folder, loaded as a model, gives the adapted model's logits.
    private func checkMerged(_ name: String, targets: [String], dtype: DType = .f32, tolerance: Float = 1e-4,
                             file: StaticString = #filePath, line: UInt = #line) throws {
        let (files, decoder, _) = try adapted(name, targets: targets)
        let expected = logits(decoder)
        let folder = try temporaryFolder()
        let summary = try MergedExport.write(decoder: decoder, files: files, to: folder, dtype: dtype)
        XCTAssertEqual(summary.files.first, "model.safetensors", file: file, line: line)
        XCTAssertTrue(summary.files.contains("config.json"), file: file, line: line)

        let merged = try ModelFiles(path: folder.path)
        XCTAssertEqual(merged.configuration, files.configuration, "\(name): the copied config reads differently", file: file, line: line)
        let weights = try SafeTensorsFile(path: folder.appendingPathComponent("model.safetensors").path)
        XCTAssertTrue(try weights.names.allSatisfy { try weights.info($0).dtype == dtype }, file: file, line: line)
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("config.json"))) as! [String: Any]
        XCTAssertEqual((config["dtype"] ?? config["torch_dtype"]) as? String, MergedExport.torchName(dtype), file: file, line: line)

        let difference = maxDifference(logits(try merged.decoder(on: CPUBackend())), expected)
        let scale = dtype == .f32 ? 1 : expected.reduce(0) { max($0, abs($1)) }
        XCTAssertLessThanOrEqual(difference, tolerance * scale, "\(name) merged \(dtype.rawValue) (logits up to \(scale))",
                                 file: file, line: line)
        guard dtype != .f32 else { return }
        // Each stored value is the f32 merge rounded to nearest.
        let exact = try temporaryFolder()
        try MergedExport.write(decoder: decoder, files: files, to: exact)
        let reference = try SafeTensorsFile(path: exact.appendingPathComponent("model.safetensors").path)
        for tensor in reference.names {
            let rounded = try reference.floats(tensor).map {
                dtype == .bf16 ? HalfPrecision.bf16ToFloat(HalfPrecision.floatToBF16($0))
                    : HalfPrecision.f16ToFloat(HalfPrecision.floatToF16($0))
            }
            XCTAssertEqual(try weights.floats(tensor), rounded, "\(name) \(dtype.rawValue) '\(tensor)'", file: file, line: line)
        }
    }

    func testLlama3Merged() throws { try checkMerged("llama3", targets: ["all-linear"]) }
    func testQwen2Merged() throws { try checkMerged("qwen2", targets: ["all-linear"]) }
    func testGemmaMerged() throws { try checkMerged("gemma", targets: ["all-linear"]) }
    func testOPTMerged() throws { try checkMerged("opt", targets: ["all-linear"]) }
    func testGPT2Merged() throws { try checkMerged("gpt2", targets: ["all-linear"]) }
    func testPhi3Merged() throws { try checkMerged("phi3", targets: ["all-linear"]) }

    /// bf16 weights keep 8 significant bits (f16: 11), so the logits move by a few times 2⁻⁸
    /// (2⁻¹¹) of their size; every stored value must be the f32 merge rounded to nearest.
    func testBF16Merged() throws {
        for name in ["llama3", "gpt2"] { try checkMerged(name, targets: ["all-linear"], dtype: .bf16, tolerance: 4.0 / 256) }
        try checkMerged("qwen2", targets: ["all-linear"], dtype: .f16, tolerance: 4.0 / 2048)
    }

    /// Large models are split into shards with an index that loaders follow.
    func testShardedMerged() throws {
        let (files, decoder, _) = try adapted("llama3", targets: ["q", "v"])
        let folder = try temporaryFolder()
        let summary = try MergedExport.write(decoder: decoder, files: files, to: folder, shardBytes: 100_000)
        XCTAssertTrue(summary.files.contains("model.safetensors.index.json"))
        XCTAssertGreaterThan(summary.files.filter { $0.hasPrefix("model-0") }.count, 1)
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.appendingPathComponent("model.safetensors").path))
        XCTAssertLessThanOrEqual(maxDifference(logits(try ModelFiles(path: folder.path).decoder(on: CPUBackend())), logits(decoder)), 1e-4)
    }

    func testMergedRejectsQuantizedDType() throws {
        let files = try files("llama3")
        XCTAssertThrowsError(try MergedExport.write(decoder: try files.decoder(on: CPUBackend()), files: files,
                                                    to: try temporaryFolder(), dtype: .q8_0))
    }

    // MARK: - From GGUF

    /// SmolLM2-135M-Instruct (Q4_1), which `scripts/setup` fetches; tests skip when it is absent.
    static var smolLM2: String {
        let cache = ProcessInfo.processInfo.environment["FRUGAL_CACHE"] ?? (NSHomeDirectory() + "/.cache/frugal")
        return cache + "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    }

    static let tokenizerTexts = [
        "The capital of France is", "Hello, world! It's 2025: 12345 apples.", "naïve café — 日本語 🙂",
        "  leading  spaces\n\n\ttabs and trailing   ", "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    ]

    /// A quantized GGUF model with adapters becomes a Hugging Face folder: weights widened and
    /// merged, a config and generation config written from the GGUF metadata, the byte-level
    /// tokenizer as tokenizer.json and the chat template in tokenizer_config.json. With the
    /// oracle, transformers gives Frugal's logits and tokenizes as Frugal does.
    func testGGUFMergedExport() throws {
        try XCTSkipUnless(FileManager.default.fileExists(atPath: Self.smolLM2), "run scripts/setup to fetch SmolLM2")
        let files = try ModelFiles(path: Self.smolLM2)
        let decoder = try files.decoder(on: CPUBackend())
        let parameters = try decoder.attachLoRA(LoRAConfiguration(rank: 4, alpha: 8, targets: ["q", "v", "down"]), seed: 3,
                                                frozenLayers: Set(2..<30))
        var random = SplitMix64(seed: 9)
        for p in parameters.parameters where p.name.hasSuffix("lora_B.weight") {
            let values = p.value.floats
            for i in values.indices { values[i] = (random.nextUniform() * 2 - 1) * 0.05 }
        }
        let tokenizer = try files.tokenizer()
        let tokens = tokenizer.encode(Self.tokenizerTexts[0])
        let expected = decoder.backend.download(decoder.logits(tokens))

        let root = try temporaryFolder()
        let folder = root.appendingPathComponent("smollm2")
        let summary = try MergedExport.write(decoder: decoder, files: files, to: folder.appendingPathComponent("merged"))
        XCTAssertEqual(Set(summary.files), ["model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                                            "tokenizer_config.json"])
        XCTAssertEqual(summary.notes, [])

        let merged = try ModelFiles(path: folder.appendingPathComponent("merged").path)
        XCTAssertEqual(merged.configuration, files.configuration)
        XCTAssertEqual(merged.chatTemplateSource, files.chatTemplateSource)
        let mergedDecoder = try merged.decoder(on: CPUBackend())
        XCTAssertLessThanOrEqual(maxDifference(mergedDecoder.backend.download(mergedDecoder.logits(tokens)), expected), 1e-4)
        let exported = try merged.tokenizer()
        for text in Self.tokenizerTexts { XCTAssertEqual(exported.encode(text), tokenizer.encode(text), text) }

        guard FileManager.default.isExecutableFile(atPath: Self.oraclePython) else { return }
        try SafeTensorsWriter.write([
            (name: "input_ids", dtype: .f32, shape: [1, tokens.count], bytes: try SafeTensorsWriter.bytes(of: tokens.map(Float.init), as: .f32)),
            (name: "logits", dtype: .f32, shape: [1, tokens.count, files.configuration.vocabSize],
             bytes: try SafeTensorsWriter.bytes(of: expected, as: .f32)),
        ], to: folder.appendingPathComponent("frugal_logits.safetensors"))
        let ids = Self.tokenizerTexts.map { tokenizer.encode($0).map(Int.init) }
        try JSONSerialization.data(withJSONObject: ["texts": Self.tokenizerTexts, "ids": ids])
            .write(to: folder.appendingPathComponent("frugal_tokens.json"))
        // 30 blocks of f32 arithmetic in a different order: measured 5e-5 against transformers.
        let (status, output) = try runChecker([folder], tolerance: 2e-4)
        print(output)
        XCTAssertEqual(status, 0, output)
    }

    // MARK: - Hugging Face PEFT and transformers

    /// Writes the folder scripts/check_peft_export.py reads: base model, PEFT adapter, Frugal's
    /// logits and the merged model.
    private func writeCheckFolder(_ name: String, targets: [String], into root: URL) throws -> URL {
        let (files, decoder, parameters) = try adapted(name, targets: targets)
        let folder = root.appendingPathComponent(name + "-" + targets.joined(separator: "_"))
        let base = folder.appendingPathComponent("base")
        try FileManager.default.createDirectory(at: base, withIntermediateDirectories: true)
        for file in ["config.json", "model.safetensors"] {
            try FileManager.default.copyItem(at: Self.fixtures.appendingPathComponent(name + "/" + file),
                                             to: base.appendingPathComponent(file))
        }
        try PEFTAdapter.export(decoder: decoder, parameters: parameters, baseModel: base.path, to: folder.appendingPathComponent("adapter"))
        try MergedExport.write(decoder: decoder, files: files, to: folder.appendingPathComponent("merged"))
        let length = Self.tokens.count / Self.batch, vocab = decoder.configuration.vocabSize
        try SafeTensorsWriter.write([
            (name: "input_ids", dtype: .f32, shape: [Self.batch, length],
             bytes: try SafeTensorsWriter.bytes(of: Self.tokens.map(Float.init), as: .f32)),
            (name: "logits", dtype: .f32, shape: [Self.batch, length, vocab], bytes: try SafeTensorsWriter.bytes(of: logits(decoder), as: .f32)),
        ], to: folder.appendingPathComponent("frugal_logits.safetensors"))
        return folder
    }

    /// Runs the checker on `folders`; returns its exit status and output.
    private func runChecker(_ folders: [URL], tolerance: Double = 1e-4) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.oraclePython)
        process.arguments = [Self.repository.appendingPathComponent("scripts/check_peft_export.py").path] + folders.map(\.path)
            + ["--tolerance", "\(tolerance)"]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output)
    }

    /// Hugging Face PEFT loads Frugal's adapters and gives Frugal's logits; transformers loads
    /// the merged folders and gives them too (skipped without the oracle environment).
    func testHuggingFaceLoadsExports() throws {
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: Self.oraclePython), "no oracle Python (torch, transformers, peft)")
        let root = try temporaryFolder()
        var folders: [URL] = []
        for name in ["llama3", "qwen2", "gemma", "opt", "gpt2", "phi3"] {
            folders.append(try writeCheckFolder(name, targets: Self.unfused[name]!, into: root))
        }
        // Fused projections: PEFT's qkv_proj / c_attn adapters with rank_pattern and alpha_pattern.
        for name in ["phi3", "gpt2"] { folders.append(try writeCheckFolder(name, targets: ["all-linear"], into: root)) }
        let (status, output) = try runChecker(folders)
        print(output)
        XCTAssertEqual(status, 0, output)
        XCTAssertEqual(output.components(separatedBy: "\n").filter { $0.hasPrefix("PASS") }.count, 3 * folders.count, output)
    }
}
