// Tests of ModelConfiguration: the transformers fixtures' config.json files, older config
// layouts, errors, and rotary inverse frequencies against the values transformers computed.
import Foundation
import XCTest
import FrugalCore
@testable import FrugalFormats

final class ModelConfigurationTests: XCTestCase {
    private let models = SafeTensorsTests.modelFixtures
    private var folder: URL!

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("config-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: folder)
    }

    private func fixture(_ name: String) throws -> ModelConfiguration {
        try ModelConfiguration.fromHuggingFace(configJSON: models.appendingPathComponent("\(name)/config.json"))
    }

    // MARK: - Families

    func testLlama3() throws {
        let c = try fixture("llama3")
        XCTAssertEqual(c.architecture, .llama)
        XCTAssertEqual(c.modelType, "llama")
        XCTAssertEqual([c.vocabSize, c.hiddenSize, c.intermediateSize, c.layers], [256, 64, 128, 2])
        XCTAssertEqual([c.heads, c.kvHeads, c.headDim, c.maxPositions], [4, 2, 16, 128])
        XCTAssertEqual(c.normEps, 1e-5)
        XCTAssertEqual(c.normKind, .rms)
        XCTAssertEqual(c.normWeightOffset, 0)
        XCTAssertEqual(c.activation, .silu)
        XCTAssertTrue(c.gatedMLP)
        XCTAssertEqual(c.ropeTheta, 10_000)
        XCTAssertEqual(c.ropeScaling, .llama3(factor: 8, lowFrequencyFactor: 1, highFrequencyFactor: 4, originalMaxPositions: 32))
        XCTAssertEqual(c.partialRotaryFactor, 1)
        XCTAssertFalse(c.tiedEmbeddings)
        XCTAssertEqual(c.embeddingScale, 1)
        XCTAssertFalse(c.attentionBias || c.outputBias || c.mlpBias || c.learnedPositions)
        XCTAssertTrue(c.normBeforeBlock && c.finalNorm)
        XCTAssertNil(c.wordEmbedProjDim)
        XCTAssertEqual(c.bosTokenID, 1)
        XCTAssertEqual(c.eosTokenIDs, [2, 3])
    }

    func testQwen2() throws {
        let c = try fixture("qwen2")
        XCTAssertEqual(c.architecture, .llama)
        XCTAssertEqual(c.modelType, "qwen2")
        XCTAssertEqual([c.hiddenSize, c.intermediateSize, c.heads, c.kvHeads, c.headDim], [32, 64, 4, 2, 8])
        XCTAssertEqual(c.normEps, 1e-6)
        XCTAssertEqual(c.ropeTheta, 1_000_000)
        XCTAssertNil(c.ropeScaling)
        XCTAssertTrue(c.tiedEmbeddings)
        XCTAssertTrue(c.attentionBias)
        XCTAssertFalse(c.outputBias)
        XCTAssertFalse(c.mlpBias)
        XCTAssertNil(c.bosTokenID)
        XCTAssertEqual(c.eosTokenIDs, [2])
    }

    func testGemma() throws {
        let c = try fixture("gemma")
        XCTAssertEqual(c.architecture, .gemma)
        XCTAssertEqual([c.hiddenSize, c.heads, c.kvHeads, c.headDim, c.intermediateSize], [64, 4, 1, 16, 128])
        XCTAssertEqual(c.activation, .geluTanh)
        XCTAssertEqual(c.normWeightOffset, 1)
        XCTAssertEqual(c.embeddingScale, 8)
        XCTAssertEqual(c.normEps, 1e-6)
        XCTAssertTrue(c.tiedEmbeddings)
        XCTAssertFalse(c.attentionBias || c.outputBias)
        XCTAssertEqual(c.bosTokenID, 2)
        XCTAssertEqual(c.eosTokenIDs, [1])
    }

    func testPhi3() throws {
        let c = try fixture("phi3")
        XCTAssertEqual(c.architecture, .phi3)
        XCTAssertEqual([c.hiddenSize, c.intermediateSize, c.heads, c.kvHeads, c.headDim], [32, 64, 2, 1, 16])
        XCTAssertEqual(c.partialRotaryFactor, 0.5)
        XCTAssertEqual(c.rotaryDims, 8)
        XCTAssertEqual(c.normEps, 1e-5)
        XCTAssertTrue(c.gatedMLP)
        XCTAssertFalse(c.tiedEmbeddings || c.attentionBias || c.outputBias)
    }

    func testOPTPostNormWithProjection() throws {
        let c = try fixture("opt")
        XCTAssertEqual(c.architecture, .opt)
        XCTAssertEqual([c.vocabSize, c.hiddenSize, c.intermediateSize, c.layers], [256, 64, 128, 2])
        XCTAssertEqual([c.heads, c.kvHeads, c.headDim, c.maxPositions], [4, 4, 16, 64])
        XCTAssertEqual(c.normKind, .layer)
        XCTAssertEqual(c.normEps, 1e-5)
        XCTAssertEqual(c.activation, .relu)
        XCTAssertFalse(c.gatedMLP)
        XCTAssertTrue(c.attentionBias && c.outputBias && c.mlpBias)
        XCTAssertTrue(c.learnedPositions)
        XCTAssertFalse(c.usesRotaryPositions)
        XCTAssertEqual(c.positionOffset, 2)
        XCTAssertFalse(c.normBeforeBlock)
        XCTAssertFalse(c.finalNorm)
        XCTAssertEqual(c.wordEmbedProjDim, 32)
        XCTAssertTrue(c.tiedEmbeddings)
        XCTAssertEqual(c.bosTokenID, 2)
        XCTAssertEqual(c.eosTokenIDs, [2])
    }

    func testOPTPreNorm() throws {
        let c = try fixture("opt-prenorm")
        XCTAssertEqual([c.hiddenSize, c.intermediateSize], [32, 64])
        XCTAssertTrue(c.normBeforeBlock)
        XCTAssertTrue(c.finalNorm)
        XCTAssertNil(c.wordEmbedProjDim)
    }

    func testGPT2() throws {
        let c = try fixture("gpt2")
        XCTAssertEqual(c.architecture, .gpt2)
        XCTAssertEqual([c.vocabSize, c.hiddenSize, c.intermediateSize, c.layers], [256, 64, 256, 2])
        XCTAssertEqual([c.heads, c.kvHeads, c.headDim, c.maxPositions], [4, 4, 16, 64])
        XCTAssertEqual(c.normKind, .layer)
        XCTAssertEqual(c.normEps, 1e-5)
        XCTAssertEqual(c.activation, .geluTanh)
        XCTAssertFalse(c.gatedMLP)
        XCTAssertTrue(c.attentionBias && c.outputBias && c.mlpBias && c.tiedEmbeddings)
        XCTAssertTrue(c.learnedPositions)
        XCTAssertEqual(c.positionOffset, 0)
        XCTAssertTrue(c.normBeforeBlock && c.finalNorm)
        XCTAssertEqual(c.eosTokenIDs, [0])
    }

    // MARK: - Rotary frequencies

    func testInverseFrequenciesMatchTransformers() throws {
        for name in ["llama3", "qwen2", "gemma", "phi3"] {
            let expected = try SafeTensorsFile(url: models.appendingPathComponent("\(name)/expected.safetensors")).floats("inv_freq")
            try assertClose(try fixture(name).ropeInverseFrequencies(), expected, name)
        }
        XCTAssertEqual(try fixture("opt").ropeInverseFrequencies(), [])
        XCTAssertEqual(try fixture("gpt2").ropeInverseFrequencies(), [])
    }

    func testOlderRopeKeysGiveTheSameFrequencies() throws {
        // The layout of Llama 3.2's config.json before transformers moved rope keys into rope_parameters.
        let url = try config(#"""
            {"model_type": "llama", "vocab_size": 256, "hidden_size": 64, "intermediate_size": 128,
             "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "max_position_embeddings": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
             "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                              "original_max_position_embeddings": 32, "rope_type": "llama3"},
             "tie_word_embeddings": true, "bos_token_id": 128000, "eos_token_id": 128001}
            """#)
        let c = try ModelConfiguration.fromHuggingFace(configJSON: url)
        XCTAssertEqual(c.ropeScaling, .llama3(factor: 8, lowFrequencyFactor: 1, highFrequencyFactor: 4, originalMaxPositions: 32))
        XCTAssertTrue(c.tiedEmbeddings)
        XCTAssertEqual(c.eosTokenIDs, [128001])
        let expected = try SafeTensorsFile(url: models.appendingPathComponent("llama3/expected.safetensors")).floats("inv_freq")
        try assertClose(c.ropeInverseFrequencies(), expected, "older llama3 keys")
    }

    func testLinearScalingAndDefaults() throws {
        let url = try config(#"""
            {"model_type": "mistral", "vocab_size": 10, "hidden_size": 32, "intermediate_size": 64,
             "num_hidden_layers": 1, "num_attention_heads": 4, "rope_scaling": {"type": "linear", "factor": 2}}
            """#)
        let c = try ModelConfiguration.fromHuggingFace(configJSON: url)
        XCTAssertEqual(c.architecture, .llama)
        XCTAssertEqual(c.modelType, "mistral")
        XCTAssertEqual(c.kvHeads, 4)
        XCTAssertEqual(c.headDim, 8)
        XCTAssertEqual(c.maxPositions, 131_072)
        XCTAssertEqual(c.ropeScaling, .linear(factor: 2))
        XCTAssertEqual(c.ropeTheta, 10_000)
        let plain = (0..<4).map { i in 1 / pow(Float(10_000), Float(2 * i) / 8) }
        try assertClose(c.ropeInverseFrequencies(), plain.map { $0 / 2 }, "linear")
    }

    func testGemmaLegacyGeluMeansTanh() throws {
        let url = try config(#"""
            {"model_type": "gemma", "vocab_size": 10, "hidden_size": 32, "intermediate_size": 64,
             "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32,
             "hidden_act": "gelu"}
            """#)
        let c = try ModelConfiguration.fromHuggingFace(configJSON: url)
        XCTAssertEqual(c.activation, .geluTanh)
        XCTAssertEqual(c.headDim, 32)
    }

    func testCodableRoundTrip() throws {
        for name in ["llama3", "opt"] {
            let c = try fixture(name)
            let decoded = try JSONDecoder().decode(ModelConfiguration.self, from: try JSONEncoder().encode(c))
            XCTAssertEqual(decoded, c)
        }
    }

    // MARK: - Errors

    func testUnknownModelType() throws {
        let url = try config(#"{"model_type": "bert", "hidden_size": 8}"#)
        XCTAssertThrowsError(try ModelConfiguration.fromHuggingFace(configJSON: url)) { error in
            XCTAssertEqual(error as? FrugalError, .unsupportedArchitecture(path: url.path, found: "bert"))
        }
    }

    func testMissingAndInvalidKeys() throws {
        try assertMalformed(#"{"model_type": "llama", "vocab_size": 10}"#, mentions: ["missing required key 'hidden_size'"])
        try assertMalformed(#"{"hidden_size": 8}"#, mentions: ["missing required key 'model_type'"])
        try assertMalformed(#"{"model_type": "gpt2", "n_embd": 64, "n_head": 4, "vocab_size": 10}"#,
                            mentions: ["missing required key 'n_layer'"])
        try assertMalformed(#"{"model_type": "gpt2", "n_embd": 64, "n_head": 0, "n_layer": 1, "vocab_size": 10}"#,
                            mentions: ["'n_head'", "positive"])
        try assertMalformed(#"{"model_type": "gpt2", "n_embd": 66, "n_head": 4, "n_layer": 1, "vocab_size": 10}"#,
                            mentions: ["'n_embd'", "multiple"])
        try assertMalformed(#"""
            {"model_type": "llama", "vocab_size": 10, "hidden_size": 32, "intermediate_size": 64,
             "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 3}
            """#, mentions: ["'num_key_value_heads'"])
        try assertMalformed(#"""
            {"model_type": "llama", "vocab_size": "10", "hidden_size": 32, "intermediate_size": 64,
             "num_hidden_layers": 1, "num_attention_heads": 4}
            """#, mentions: ["'vocab_size'", "integer"])
        try assertMalformed(#"""
            {"model_type": "llama", "vocab_size": 10, "hidden_size": 32, "intermediate_size": 64,
             "num_hidden_layers": 1, "num_attention_heads": 4, "rope_scaling": {"rope_type": "yarn", "factor": 4}}
            """#, mentions: ["rope type 'yarn'"])
        try assertMalformed(#"""
            {"model_type": "llama", "vocab_size": 10, "hidden_size": 32, "intermediate_size": 64,
             "num_hidden_layers": 1, "num_attention_heads": 4, "rope_parameters": {"rope_type": "llama3", "factor": 8}}
            """#, mentions: ["missing required key 'rope_parameters.low_freq_factor'"])
        try assertMalformed(#"""
            {"model_type": "opt", "vocab_size": 10, "hidden_size": 32, "ffn_dim": 64,
             "num_hidden_layers": 1, "num_attention_heads": 4, "activation_function": "mish"}
            """#, mentions: ["'activation_function'", "mish"])
        try assertMalformed(#"{"model_type": "llama",}"#, mentions: ["invalid JSON"])
    }

    func testMissingConfig() {
        let url = folder.appendingPathComponent("config.json")
        XCTAssertThrowsError(try ModelConfiguration.fromHuggingFace(configJSON: url)) { error in
            guard case .missingFile(let path, _) = error as? FrugalError else { return XCTFail("\(error)") }
            XCTAssertEqual(path, url.path)
        }
    }

    // MARK: - Helpers

    private func config(_ json: String) throws -> URL {
        let url = folder.appendingPathComponent("config-\(UUID().uuidString).json")
        try Data(json.utf8).write(to: url)
        return url
    }

    private func assertMalformed(_ json: String, mentions: [String], line: UInt = #line) throws {
        let url = try config(json)
        XCTAssertThrowsError(try ModelConfiguration.fromHuggingFace(configJSON: url), line: line) { error in
            guard case let .malformedFile(path, problem, _) = error as? FrugalError else {
                return XCTFail("expected malformedFile, got \(error)", line: line)
            }
            XCTAssertEqual(path, url.path, line: line)
            for text in mentions {
                XCTAssertTrue(problem.contains(text), "'\(problem)' does not mention '\(text)'", line: line)
            }
        }
    }

    private func assertClose(_ found: [Float], _ expected: [Float], _ what: String, line: UInt = #line) throws {
        XCTAssertEqual(found.count, expected.count, what, line: line)
        for (i, (a, b)) in zip(found, expected).enumerated() {
            XCTAssertEqual(a, b, accuracy: 2e-6 * abs(b), "\(what) inv_freq[\(i)]", line: line)
        }
    }
}
