// The default real model (SmolLM2-135M-Instruct, fetched by scripts/setup) answering on the CPU.
import Foundation
import XCTest
import FrugalCPU
import FrugalEval
import FrugalFormats
import FrugalModels

final class RealModelTests: XCTestCase {
    /// The model `scripts/setup` puts in the cache; tests skip when it is absent.
    static var modelPath: String {
        let cache = ProcessInfo.processInfo.environment["FRUGAL_CACHE"] ?? (NSHomeDirectory() + "/.cache/frugal")
        return cache + "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    }

    private func session() throws -> ChatSession {
        try XCTSkipUnless(FileManager.default.fileExists(atPath: Self.modelPath), "run scripts/setup to fetch SmolLM2")
        let files = try ModelFiles(path: Self.modelPath)
        return ChatSession(decoder: try files.decoder(on: CPUBackend()), tokenizer: try files.tokenizer(),
                           template: files.chatTemplate,
                           defaultSystemPrompt: ChatTemplate.defaultSystemPrompt(in: files.chatTemplateSource),
                           eosTokenIDs: files.configuration.eosTokenIDs)
    }

    func testCapitalOfFranceIsParisGreedy() throws {
        let chat = try session()
        XCTAssertEqual(chat.template, .chatML)
        var pieces = [String]()
        let (reply, statistics) = chat.reply(to: "What is the capital of France?", maxTokens: 24) { pieces.append($0) }
        XCTAssertTrue(reply.contains("Paris"), "reply was \(reply.debugDescription)")
        XCTAssertGreaterThan(pieces.filter { !$0.isEmpty }.count, 1, "tokens were not streamed one by one")
        XCTAssertLessThan(statistics.generatedTokens, 24, "the reply did not stop at the end of its turn")
    }
}
