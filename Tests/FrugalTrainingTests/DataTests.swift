// DataTests: the training data pipeline: reading every format (and naming the line of a bad
// record), loss masks, padding and packing, and the loader's determinism and resumption.

import Foundation
import FrugalCore
import FrugalFormats
import FrugalModels
@testable import FrugalTraining
import XCTest

final class DataTests: XCTestCase {
    static let fixtures = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("data")
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    func fixture(_ name: String) -> String { Self.fixtures.appendingPathComponent(name).path }

    /// A file of `../shared/data`, or a skip when the shared folder is absent.
    func sharedData(_ name: String) throws -> String {
        let path = Self.repository.deletingLastPathComponent().appendingPathComponent("shared/data/\(name)").path
        guard FileManager.default.fileExists(atPath: path) else { throw XCTSkip("\(path) not found (no ../shared)") }
        return path
    }

    /// A small byte-level BPE tokenizer with ChatML's special tokens (a FrugalFormats fixture).
    func chatMLTokenizer() throws -> Tokenizer {
        try Tokenizer(tokenizerJSON: Self.repository.appendingPathComponent("Tests/FrugalFormatsTests/Fixtures/tokenizers/bytelevel_gpt2.json"))
    }

    /// Asserts that reading `name` fails with `problem`, naming the file.
    func assertReadFails(_ name: String, format: DataFormat? = nil, skipBadRecords: Bool = false, problem: String,
                         file: StaticString = #filePath, line: UInt = #line) {
        let path = fixture(name)
        XCTAssertThrowsError(try TrainingDataset(contentsOf: path, format: format, skipBadRecords: skipBadRecords),
                             file: file, line: line) { error in
            XCTAssertEqual(error as? FrugalError, .malformedFile(path: path, problem: problem), file: file, line: line)
        }
    }

    // MARK: - Reading

    func testReadsAlpacaAsLLaMAFactoryDoes() throws {
        let data = try TrainingDataset(contentsOf: fixture("alpaca.json"))
        XCTAssertEqual(data.format, .alpaca)
        XCTAssertEqual(data.report, DataLoadReport(records: 3, skipped: 0, skippedLines: []))
        XCTAssertEqual(data.examples, [
            TrainingExample(messages: [ChatMessage(role: "user", content: "Name a primary color."),
                                       ChatMessage(role: "assistant", content: "Red.")]),
            TrainingExample(messages: [ChatMessage(role: "user", content: "Translate to French.\nGood morning"),
                                       ChatMessage(role: "assistant", content: "Bonjour")]),
            TrainingExample(messages: [ChatMessage(role: "system", content: "You translate."),
                                       ChatMessage(role: "user", content: "Translate to French: Good morning"),
                                       ChatMessage(role: "assistant", content: "Bonjour"),
                                       ChatMessage(role: "user", content: "And in German?"),
                                       ChatMessage(role: "assistant", content: "Guten Morgen")]),
        ])
    }

    func testReadsMessagesShareGPTAndText() throws {
        let messages = try TrainingDataset(contentsOf: fixture("messages.jsonl"))
        XCTAssertEqual(messages.format, .messages)
        XCTAssertEqual(messages.examples.count, 2)
        XCTAssertEqual(messages.examples[0], TrainingExample(messages: [
            ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "What is 2+2?"),
            ChatMessage(role: "assistant", content: "4"),
        ]))

        let shareGPT = try TrainingDataset(contentsOf: fixture("sharegpt.json"))
        XCTAssertEqual(shareGPT.format, .shareGPT)
        XCTAssertEqual(shareGPT.examples, try TrainingDataset(contentsOf: fixture("sharegpt.jsonl")).examples)
        XCTAssertEqual(shareGPT.examples, [
            TrainingExample(messages: [ChatMessage(role: "system", content: "You are terse."),
                                       ChatMessage(role: "user", content: "Capital of France?"),
                                       ChatMessage(role: "assistant", content: "Paris.")]),
            TrainingExample(messages: [ChatMessage(role: "system", content: "You count."),
                                       ChatMessage(role: "user", content: "One, two..."),
                                       ChatMessage(role: "assistant", content: "Three.")]),
        ])

        let lines = try TrainingDataset(contentsOf: fixture("text.jsonl"))
        XCTAssertEqual(lines.format, .text)
        XCTAssertEqual(lines.examples.last, TrainingExample(text: "Pack my box with five dozen liquor jugs."))

        let whole = try TrainingDataset(contentsOf: fixture("text.txt"))
        XCTAssertEqual(whole.format, .text)
        XCTAssertEqual(whole.examples, [TrainingExample(text: try String(contentsOfFile: fixture("text.txt"), encoding: .utf8))])
    }

    func testBadRecordsNameFileAndLine() {
        assertReadFails("messages_bad_json.jsonl", problem: "line 3: not valid JSON")
        assertReadFails("alpaca_malformed.json", problem: "line 3: missing field 'output'")
        assertReadFails("sharegpt_wrong_type.jsonl", problem: "line 2: conversations entry 1: field 'value' is not a string")
        assertReadFails("alpaca.json", format: .messages, problem: "line 2: missing field 'messages'")
        assertReadFails("text.txt", format: .alpaca, problem: "a .txt file can only be read as plain text, not alpaca")
        // A broken structure cannot be skipped.
        assertReadFails("alpaca_unclosed.json", skipBadRecords: true, problem: "line 3: the JSON array is not closed")
    }

    func testSkipsAndCountsBadRecords() throws {
        let data = try TrainingDataset(contentsOf: fixture("alpaca_malformed.json"), skipBadRecords: true)
        XCTAssertEqual(data.report, DataLoadReport(records: 2, skipped: 3, skippedLines: [3, 4, 5]))
        XCTAssertEqual(data.examples.last, TrainingExample(messages: [ChatMessage(role: "user", content: "Say no."),
                                                                      ChatMessage(role: "assistant", content: "No.")]))
        let lines = try TrainingDataset(contentsOf: fixture("messages_bad_json.jsonl"), skipBadRecords: true)
        XCTAssertEqual(lines.report, DataLoadReport(records: 3, skipped: 1, skippedLines: [3]))
        assertReadFails("messages_bad_json.jsonl", format: .text, skipBadRecords: true, problem: "no readable records")
    }

    func testReadsRealAlpacaAndShareGPTData() throws {
        let alpaca = try TrainingDataset(contentsOf: try sharedData("alpaca_en_demo.json"))
        XCTAssertEqual(alpaca.format, .alpaca)
        XCTAssertEqual(alpaca.report, DataLoadReport(records: 999, skipped: 0, skippedLines: []))
        XCTAssertEqual(alpaca.examples[0], TrainingExample(messages: [
            ChatMessage(role: "user", content: "Describe a process of making crepes."),
            ChatMessage(role: "assistant", content: try Self.firstOutput(of: try sharedData("alpaca_en_demo.json"))),
        ]))
        let stanford = try TrainingDataset(contentsOf: try sharedData("alpaca_stanford_first102.json"))
        XCTAssertEqual(stanford.report.records, 102)
        let preferences = try TrainingDataset(contentsOf: try sharedData("dpo_en_demo.json"))
        XCTAssertEqual(preferences.format, .shareGPT)
        XCTAssertEqual(preferences.report.records, 300)
    }

    static func firstOutput(of path: String) throws -> String {
        let records = try JSONSerialization.jsonObject(with: try Data(contentsOf: URL(fileURLWithPath: path))) as? [[String: Any]]
        return try XCTUnwrap(records?.first?["output"] as? String)
    }

    // MARK: - Tokenization

    func testChatTrainsOnlyTheAssistantReplies() throws {
        let tokenizer = try chatMLTokenizer()
        let messages = [ChatMessage(role: "user", content: "Hello there"), ChatMessage(role: "assistant", content: "Hi! How are you?"),
                        ChatMessage(role: "user", content: "Fine."), ChatMessage(role: "assistant", content: "Good to hear.")]
        let sequences = try ExampleTokenizer(tokenizer: tokenizer, template: .chatML).tokenize(TrainingExample(messages: messages))
        XCTAssertEqual(sequences.count, 1)
        let sequence = sequences[0]
        XCTAssertEqual(tokenizer.decode(sequence.tokens), ChatTemplate.chatML.render(messages, addGenerationPrompt: false))
        // Targets are the next tokens, shifted: targets[t] == tokens[t + 1] where trained.
        for (position, target) in sequence.targets.enumerated() where target != TokenizedExample.ignoredTarget {
            XCTAssertEqual(target, sequence.tokens[position + 1])
        }
        XCTAssertEqual(sequence.targets.last, TokenizedExample.ignoredTarget)
        // What is trained is exactly each reply and its end-of-turn marker.
        var replies: [[Int32]] = [[]]
        for (position, target) in sequence.targets.enumerated() {
            if target != TokenizedExample.ignoredTarget {
                replies[replies.count - 1].append(target)
            } else if position > 0, sequence.targets[position - 1] != TokenizedExample.ignoredTarget {
                replies.append([])
            }
        }
        XCTAssertEqual(replies.filter { !$0.isEmpty }.map { tokenizer.decode($0) },
                       ["Hi! How are you?<|im_end|>", "Good to hear.<|im_end|>"])

        let everything = try ExampleTokenizer(tokenizer: tokenizer, template: .chatML, trainOnPrompt: true)
            .tokenize(TrainingExample(messages: messages))[0]
        XCTAssertEqual(everything.tokens, sequence.tokens)
        XCTAssertEqual(everything.targetTokenCount, sequence.tokens.count - 1)

        let truncated = try ExampleTokenizer(tokenizer: tokenizer, template: .chatML, maxLength: 10)
            .tokenize(TrainingExample(messages: messages))
        XCTAssertEqual(truncated, [TokenizedExample(tokens: Array(sequence.tokens.prefix(10)), targets: Array(sequence.targets.prefix(10)))])
    }

    func testDefaultSystemPromptIsNotTrained() throws {
        let tokenizer = try chatMLTokenizer()
        let example = TrainingExample(messages: [ChatMessage(role: "user", content: "Hi"), ChatMessage(role: "assistant", content: "Yo")])
        let plain = try ExampleTokenizer(tokenizer: tokenizer, template: .chatML).tokenize(example)[0]
        let withSystem = try ExampleTokenizer(tokenizer: tokenizer, template: .chatML, defaultSystemPrompt: "Be nice.")
            .tokenize(example)[0]
        XCTAssertTrue(tokenizer.decode(withSystem.tokens).hasPrefix("<|im_start|>system\nBe nice.<|im_end|>\n"))
        XCTAssertEqual(withSystem.targets.filter { $0 != TokenizedExample.ignoredTarget },
                       plain.targets.filter { $0 != TokenizedExample.ignoredTarget })
    }

    func testPlainTextTrainsOnEveryTokenAndIsCutIntoPieces() throws {
        let tokenizer = try chatMLTokenizer()
        let text = "The quick brown fox jumps over the lazy dog, and then the dog sleeps again."
        let whole = try ExampleTokenizer(tokenizer: tokenizer, template: nil).tokenize(TrainingExample(text: text))
        XCTAssertEqual(whole.count, 1)
        XCTAssertEqual(whole[0].targets, Array(whole[0].tokens.dropFirst()) + [TokenizedExample.ignoredTarget])

        let pieces = try ExampleTokenizer(tokenizer: tokenizer, template: nil, maxLength: 4).tokenize(TrainingExample(text: text))
        XCTAssertGreaterThan(pieces.count, 2)
        XCTAssertTrue(pieces.allSatisfy { $0.tokens.count <= 4 })
        XCTAssertEqual(pieces.flatMap(\.tokens), whole[0].tokens)
        XCTAssertEqual(pieces.flatMap(\.targets), whole[0].targets)

        XCTAssertThrowsError(try ExampleTokenizer(tokenizer: tokenizer, template: nil)
            .tokenize(TrainingExample(messages: [ChatMessage(role: "user", content: "Hi")])))
    }

    // MARK: - Batching

    /// Distinct sequences: sequence `i` has `lengths[i]` tokens `1000·i + j`, all trained
    /// except the last.
    static func sequences(_ lengths: [Int]) -> [TokenizedExample] {
        lengths.enumerated().map { index, length in
            let tokens = (0..<length).map { Int32(1000 * index + $0) }
            return TokenizedExample(tokens: tokens, trained: Array(repeating: true, count: length))
        }
    }

    /// The sequences laid in a batch: per row, per segment, the tokens, checking that segments
    /// are contiguous, numbered from 0, with positions restarting at 0, and padding only at
    /// the end of a row.
    func segmentsOf(_ batch: Batch, file: StaticString = #filePath, line: UInt = #line) -> [[Int32]] {
        var found: [[Int32]] = []
        for row in 0..<batch.batch {
            var segment: Int32 = -1
            var position: Int32 = 0
            for column in 0..<batch.length {
                let index = row * batch.length + column
                if batch.segments[index] == Batch.paddingSegment {
                    XCTAssertEqual(batch.targets[index], TokenizedExample.ignoredTarget, file: file, line: line)
                    segment = Int32.max
                    continue
                }
                if batch.segments[index] != segment {
                    XCTAssertEqual(batch.segments[index], segment + 1, "segments in order, padding last", file: file, line: line)
                    segment = batch.segments[index]
                    position = 0
                    found.append([])
                }
                XCTAssertEqual(batch.positions[index], position, file: file, line: line)
                position += 1
                found[found.count - 1].append(batch.tokens[index])
            }
        }
        return found
    }

    func testPaddingPadsToTheLongestOrAFixedLength() throws {
        let input = Self.sequences([3, 5, 2])
        var loader = try DataLoader(sequences: input, batchSize: 2, strategy: .padding(length: nil), shuffle: false)
        let first = loader.next()
        XCTAssertEqual(first.batch.batch, 2)
        XCTAssertEqual(first.batch.length, 5)
        XCTAssertEqual(first.batch.tokens, [0, 1, 2, 0, 0, 1000, 1001, 1002, 1003, 1004])
        XCTAssertEqual(first.batch.targets, [1, 2, -100, -100, -100, 1001, 1002, 1003, 1004, -100])
        XCTAssertEqual(first.batch.segments, [0, 0, 0, -1, -1, 0, 0, 0, 0, 0])
        XCTAssertEqual(first.batch.positions, [0, 1, 2, 0, 0, 0, 1, 2, 3, 4])
        XCTAssertEqual(first.batch.targetTokenCount, 6)
        XCTAssertFalse(first.endsEpoch)
        let last = loader.next()
        XCTAssertEqual(last.batch.batch, 1)
        XCTAssertEqual(last.batch.length, 2)
        XCTAssertTrue(last.endsEpoch)
        XCTAssertEqual(loader.state, DataLoaderState(seed: 0, epoch: 1, cursor: 0))

        // The 5-token sequence is cut into 4 + 1 tokens; the 1-token piece has no target and is left out.
        var fixed = try DataLoader(sequences: input, batchSize: 2, strategy: .padding(length: 4), padTokenID: 7, shuffle: false)
        XCTAssertEqual(fixed.sequenceCount, 3)
        XCTAssertEqual(fixed.batchesPerEpoch, 2)
        let batch = fixed.next().batch
        XCTAssertEqual(batch.length, 4)
        XCTAssertEqual(batch.tokens, [0, 1, 2, 7, 1000, 1001, 1002, 1003])
        XCTAssertEqual(batch.targets, [1, 2, -100, -100, 1001, 1002, 1003, 1004])
    }

    func testPackingKeepsSequencesInTheirOwnSegments() throws {
        var random = SplitMix64(seed: 7)
        let lengths = (0..<200).map { _ in 2 + Int(random.next() % 60) }
        let input = Self.sequences(lengths)
        var loader = try DataLoader(sequences: input, batchSize: 4, strategy: .packing(length: 128), seed: 3)
        for epoch in 0..<2 {
            var seen: [[Int32]] = []
            var filled = 0
            var total = 0
            repeat {
                let next = loader.next()
                XCTAssertEqual(next.epoch, epoch)
                XCTAssertEqual(next.batch.length, 128)
                seen += segmentsOf(next.batch)
                filled += next.batch.segments.filter { $0 != Batch.paddingSegment }.count
                total += next.batch.tokens.count
                XCTAssertEqual(next.batch.targetTokenCount, next.batch.targets.filter { $0 != -100 }.count)
                if next.endsEpoch { break }
            } while true
            // Every sequence exactly once, whole, in one segment; no segment spans two of them.
            XCTAssertTrue(seen.sorted { $0[0] < $1[0] } == input.map(\.tokens))
            XCTAssertGreaterThan(Double(filled) / Double(total), 0.9)
        }
    }

    func testLongSequencesArePackedInPieces() throws {
        let input = Self.sequences([10, 3])
        var loader = try DataLoader(sequences: input, batchSize: 8, strategy: .packing(length: 4), shuffle: false)
        let batch = loader.next().batch
        XCTAssertEqual(segmentsOf(batch), [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9], [1000, 1001, 1002]])
        // A piece's last target is still the token after it in the source.
        XCTAssertEqual(batch.targets[3], 4)
    }

    // MARK: - Loader

    func testLoaderIsDeterministicAndShufflesEachEpoch() throws {
        let input = Self.sequences(Array(repeating: 5, count: 40))
        func firstTokens(seed: UInt64, batches: Int) throws -> [[Int32]] {
            var loader = try DataLoader(sequences: input, batchSize: 4, strategy: .padding(length: nil), seed: seed)
            return (0..<batches).map { _ in
                let batch = loader.next().batch
                return (0..<batch.batch).map { batch.tokens[$0 * batch.length] }
            }
        }
        let run = try firstTokens(seed: 11, batches: 20)
        XCTAssertEqual(run, try firstTokens(seed: 11, batches: 20))
        XCTAssertNotEqual(run, try firstTokens(seed: 12, batches: 20))
        let epochs = [Array(run[0..<10].joined()), Array(run[10..<20].joined())]
        XCTAssertNotEqual(epochs[0], epochs[1])
        XCTAssertNotEqual(epochs[0], input.map { $0.tokens[0] })
        for epoch in epochs { XCTAssertEqual(epoch.sorted(), input.map { $0.tokens[0] }) }
    }

    func testLoaderResumesFromASavedState() throws {
        var random = SplitMix64(seed: 1)
        let input = Self.sequences((0..<50).map { _ in 2 + Int(random.next() % 30) })
        var original = try DataLoader(sequences: input, batchSize: 3, strategy: .packing(length: 48), seed: 5)
        for _ in 0..<(original.batchesPerEpoch + 2) { _ = original.next() }
        let saved = try JSONDecoder().decode(DataLoaderState.self, from: try JSONEncoder().encode(original.state))
        XCTAssertEqual(saved.epoch, 1)
        XCTAssertEqual(saved.cursor, 2)

        var resumed = try DataLoader(sequences: input, batchSize: 3, strategy: .packing(length: 48), seed: 0)
        try resumed.resume(from: saved)
        for _ in 0..<(2 * original.batchesPerEpoch) {
            let expected = original.next()
            let next = resumed.next()
            XCTAssertEqual(next.batch, expected.batch)
            XCTAssertEqual([next.epoch, next.index], [expected.epoch, expected.index])
            XCTAssertEqual(next.endsEpoch, expected.endsEpoch)
        }
        XCTAssertEqual(resumed.state, original.state)

        XCTAssertThrowsError(try resumed.resume(from: DataLoaderState(seed: 5, epoch: 0, cursor: 1000)))
    }

    func testLoaderRejectsBadSettings() {
        XCTAssertThrowsError(try DataLoader(sequences: Self.sequences([3]), batchSize: 0, strategy: .padding(length: nil)))
        XCTAssertThrowsError(try DataLoader(sequences: Self.sequences([3]), batchSize: 1, strategy: .packing(length: 0)))
        XCTAssertThrowsError(try DataLoader(sequences: Self.sequences([1]), batchSize: 1, strategy: .padding(length: nil)))
    }

    // MARK: - Real data end to end

    func testRealAlpacaWithSmolLM2PacksAndMasks() throws {
        let modelPath = FileManager.default.homeDirectoryForCurrentUser
            .appendingPathComponent(".cache/frugal/models/SmolLM2-135M-Instruct.Q4_1.gguf").path
        guard FileManager.default.fileExists(atPath: modelPath) else { throw XCTSkip("\(modelPath) not found") }
        let data = try TrainingDataset(contentsOf: try sharedData("alpaca_en_demo.json"))
        let gguf = try GGUFFile(path: modelPath)
        let tokenizer = try Tokenizer(gguf: gguf)
        let source = gguf["tokenizer.chat_template"]?.string
        let template = try XCTUnwrap(ChatTemplate.detect(from: source, architecture: gguf.architecture))
        let examples = Array(data.examples.prefix(64))
        let sequences = try ExampleTokenizer(tokenizer: tokenizer, template: template,
                                             defaultSystemPrompt: ChatTemplate.defaultSystemPrompt(in: source),
                                             maxLength: 512).tokenize(examples)
        XCTAssertEqual(sequences.count, examples.count)
        let end = try XCTUnwrap(tokenizer.tokenID(for: "<|im_end|>"))
        for (sequence, example) in zip(sequences, examples) where sequence.tokens.count < 512 {
            // The trained tokens spell the reply, then <|im_end|>.
            let trained = sequence.targets.filter { $0 != TokenizedExample.ignoredTarget }
            XCTAssertEqual(trained.last, end)
            guard case let .chat(messages) = example.content else { return XCTFail("not a chat") }
            XCTAssertEqual(tokenizer.decode(trained), messages.last!.content + "<|im_end|>")
        }
        var loader = try DataLoader(sequences: sequences, batchSize: 2, strategy: .packing(length: 1024),
                                    padTokenID: tokenizer.eosID ?? 0, seed: 42)
        var seen = 0
        repeat {
            let next = loader.next()
            seen += segmentsOf(next.batch).count
            if next.endsEpoch { break }
        } while true
        XCTAssertEqual(seen, sequences.count)
    }
}
