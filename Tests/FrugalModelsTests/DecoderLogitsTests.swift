// Logits of tiny random-weight models of every family against Hugging Face transformers.
import XCTest
import FrugalCore
import FrugalCPU
import FrugalFormats
@testable import FrugalModels

final class DecoderLogitsTests: XCTestCase {
    static let fixtures = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("models")

    /// Runs the fixture's input ids through Frugal and compares with transformers' logits.
    private func check(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let folder = Self.fixtures.appendingPathComponent(name)
        let model = try ModelFiles(path: folder.path)
        let decoder = try model.decoder(on: CPUBackend())
        let expected = try SafeTensorsFile(path: folder.appendingPathComponent("expected.safetensors").path)
        let ids = try expected.floats("input_ids").map { Int32($0) }
        let reference = try expected.floats("logits")
        let batch = try expected.info("input_ids").shape[0]
        let logits = decoder.backend.download(decoder.logits(ids, batch: batch))
        XCTAssertEqual(logits.count, reference.count, file: file, line: line)
        var worst: Float = 0
        for (a, b) in zip(logits, reference) { worst = max(worst, abs(a - b)) }
        XCTAssertLessThanOrEqual(worst, 1e-4, "\(name): max |frugal - transformers| = \(worst)", file: file, line: line)
    }

    func testLlama3WithGroupedQueryAttentionAndRopeScaling() throws { try check("llama3") }
    func testQwen2WithAttentionBiasAndTiedEmbeddings() throws { try check("qwen2") }
    func testGemmaWithEmbeddingScaleAndOffsetNorm() throws { try check("gemma") }
    func testPhi3WithFusedProjectionsAndPartialRotary() throws { try check("phi3") }
    func testOPTPostNormWithProjections() throws { try check("opt") }
    func testOPTPreNorm() throws { try check("opt-prenorm") }
    func testGPT2() throws { try check("gpt2") }

    func testCachedDecodingMatchesFullForward() throws {
        let folder = Self.fixtures.appendingPathComponent("llama3")
        let decoder = try ModelFiles(path: folder.path).decoder(on: CPUBackend())
        let ids: [Int32] = [5, 17, 200, 3, 99, 42]
        let full = decoder.backend.download(decoder.logits(ids))
        let cache = KVCache(backend: decoder.backend, configuration: decoder.configuration, capacity: 16)
        _ = decoder.logits(Array(ids.prefix(4)), cache: cache)
        _ = decoder.logits([ids[4]], cache: cache)
        let last = decoder.backend.download(decoder.logits([ids[5]], cache: cache, lastOnly: true))
        let vocab = decoder.configuration.vocabSize
        for v in 0..<vocab { XCTAssertEqual(last[v], full[5 * vocab + v], accuracy: 1e-4) }
    }
}
