// PreferenceData: preference pairs (a prompt, a chosen and a rejected reply) read from ShareGPT
// records (`conversations` + `chosen` + `rejected`) or `prompt`/`chosen`/`rejected` records, and
// tokenized with the chat template so that only the reply's tokens carry targets.
import Foundation
import FrugalCore
import FrugalFormats
import FrugalModels

/// One preference record: a conversation to answer and two answers, the preferred one first.
public struct PreferencePair: Sendable, Equatable {
    /// The conversation so far (system, user and earlier assistant turns); the reply comes next.
    public var prompt: [ChatMessage]
    /// The preferred reply.
    public var chosen: String
    /// The other reply.
    public var rejected: String

    /// A pair.
    public init(prompt: [ChatMessage], chosen: String, rejected: String) {
        self.prompt = prompt
        self.chosen = chosen
        self.rejected = rejected
    }
}

/// The preference pairs of a data file.
///
/// A JSON array (`.json`) or JSON lines, one record each, in either layout:
/// - ShareGPT, as LLaMA-Factory's `dpo_en_demo.json`: `conversations` (a list of
///   `{"from", "value"}` ending with the user's turn; optional `system`), `chosen` and
///   `rejected` (each a `{"from": "gpt", "value"}` turn, or a string);
/// - `prompt`, `chosen`, `rejected` strings (optional `system`).
public struct PreferenceDataset: Sendable {
    /// The pairs, in file order.
    public let pairs: [PreferencePair]

    /// Reads a preference data file.
    /// - Throws: `FrugalError.missingFile` when the file cannot be read;
    ///   `FrugalError.malformedFile` with a problem that starts "line N:" for a bad record, or
    ///   when the file holds no record.
    public init(contentsOf path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw FrugalError.missingFile(path: path, what: "preference data file")
        }
        var bytes = [UInt8](data)
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes.removeFirst(3) }  // a UTF-8 byte-order mark
        let records = bytes.first(where: { !JSONRecordScanner.isWhitespace($0) }) == UInt8(ascii: "[")
            ? try JSONRecordScanner.arrayElements(of: bytes, path: path)
            : JSONRecordScanner.lines(of: bytes)
        var pairs: [PreferencePair] = []
        for record in records {
            do throws(RecordProblem) {
                pairs.append(try Self.pair(from: record.bytes))
            } catch {
                throw FrugalError.malformedFile(path: path, problem: "line \(record.line): \(error.message)")
            }
        }
        guard !pairs.isEmpty else { throw FrugalError.malformedFile(path: path, problem: "no records") }
        self.pairs = pairs
    }

    /// The pair one record describes.
    static func pair(from bytes: ArraySlice<UInt8>) throws(RecordProblem) -> PreferencePair {
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: Data(bytes))
        } catch {
            throw RecordProblem("not valid JSON")
        }
        guard let record = parsed as? [String: Any] else { throw RecordProblem("the record is not a JSON object") }
        var prompt: [ChatMessage]
        if record["conversations"] != nil {
            guard case let .chat(messages) = try DataFormat.shareGPT.example(from: record).content else {
                throw RecordProblem("field 'conversations' is not a conversation")
            }
            prompt = messages
        } else if let text = record["prompt"] {
            guard let text = text as? String else { throw RecordProblem("field 'prompt' is not a string") }
            prompt = [ChatMessage(role: "user", content: text)]
            if let system = record["system"] as? String, !system.isEmpty {
                prompt.insert(ChatMessage(role: "system", content: system), at: 0)
            }
        } else {
            throw RecordProblem("no field 'conversations' or 'prompt'")
        }
        guard prompt.last?.role == "user" else {
            throw RecordProblem("the conversation must end with the user's turn, which the replies answer")
        }
        return PreferencePair(prompt: prompt, chosen: try reply("chosen", in: record),
                              rejected: try reply("rejected", in: record))
    }

    /// A reply field: a string, or an assistant turn `{"from": "gpt", "value"}` / `{"role", "content"}`.
    private static func reply(_ key: String, in record: [String: Any]) throws(RecordProblem) -> String {
        switch record[key] {
        case nil, is NSNull:
            throw RecordProblem("missing field '\(key)'")
        case let text as String:
            return text
        case let turn as [String: Any]:
            let role = (turn["from"] ?? turn["role"]) as? String
            guard role == nil || ["gpt", "assistant"].contains(role!) else {
                throw RecordProblem("field '\(key)' is a turn of '\(role!)', not of the assistant")
            }
            guard let text = (turn["value"] ?? turn["content"]) as? String else {
                throw RecordProblem("field '\(key)' has no string 'value'")
            }
            return text
        default:
            throw RecordProblem("field '\(key)' is neither a string nor a turn")
        }
    }
}

/// A preference pair as two token sequences that share the prompt; only the reply's tokens are
/// targets, and each sequence ends with its reply's last token (the end-of-turn marker unless
/// the reply was cut), where a reward model reads its score.
public struct TokenizedPair: Sendable, Equatable {
    /// The prompt, then the chosen reply.
    public var chosen: TokenizedExample
    /// The prompt, then the rejected reply.
    public var rejected: TokenizedExample
    /// Tokens of the prompt (the same at the start of both).
    public var promptLength: Int

    /// A pair of sequences.
    public init(chosen: TokenizedExample, rejected: TokenizedExample, promptLength: Int) {
        self.chosen = chosen
        self.rejected = rejected
        self.promptLength = promptLength
    }

    /// The prompt's tokens.
    public var prompt: [Int32] { Array(chosen.tokens.prefix(promptLength)) }
}

/// Turns preference pairs into `TokenizedPair`s for one model.
///
/// The conversation with the reply as the assistant's turn is rendered with the chat template;
/// the text before the reply (ending with the assistant's header) is the prompt, encoded whole;
/// the reply through its end-of-turn marker is encoded on its own. Where a sequence is longer
/// than `maxLength`, the prompt keeps its last tokens (at least half of `maxLength` when it is
/// that long) and the reply is cut at the end.
public struct PreferenceTokenizer: Sendable {
    public let tokenizer: Tokenizer
    public let template: ChatTemplate
    /// The system prompt the template writes when a conversation has none, or nil.
    public let defaultSystemPrompt: String?
    /// The most tokens of a sequence, or nil for no limit.
    public let maxLength: Int?

    /// A tokenizer of pairs; parameters as the properties of the same names.
    public init(tokenizer: Tokenizer, template: ChatTemplate, defaultSystemPrompt: String? = nil, maxLength: Int? = nil) {
        self.tokenizer = tokenizer
        self.template = template
        self.defaultSystemPrompt = defaultSystemPrompt
        self.maxLength = maxLength
    }

    /// The pair's two sequences.
    /// - Throws: `FrugalError.invalidArgument` when `maxLength` leaves no room for a reply.
    public func tokenize(_ pair: PreferencePair) throws -> TokenizedPair {
        var (prompt, chosen) = encode(pair.prompt, reply: pair.chosen)
        var rejected = encode(pair.prompt, reply: pair.rejected).reply
        if let maxLength {
            guard maxLength >= 2 else { throw FrugalError.invalidArgument("the maximum length must be at least 2") }
            let longest = max(chosen.count, rejected.count)
            if prompt.count + longest > maxLength {
                let keep = min(prompt.count, max(maxLength - longest, maxLength / 2))
                prompt = Array(prompt.suffix(keep))
                chosen = Array(chosen.prefix(maxLength - keep))
                rejected = Array(rejected.prefix(maxLength - keep))
            }
        }
        func sequence(_ reply: [Int32]) -> TokenizedExample {
            TokenizedExample(tokens: prompt + reply, trained: Array(repeating: false, count: prompt.count)
                                + Array(repeating: true, count: reply.count))
        }
        return TokenizedPair(chosen: sequence(chosen), rejected: sequence(rejected), promptLength: prompt.count)
    }

    /// The sequences of many pairs, in order.
    public func tokenize(_ pairs: [PreferencePair]) throws -> [TokenizedPair] {
        try pairs.map { try tokenize($0) }
    }

    /// The tokens of a prompt as a policy sees it before replying (what `tokenize` puts first,
    /// untruncated).
    public func promptTokens(_ prompt: [ChatMessage]) -> [Int32] {
        encode(prompt, reply: "").prompt
    }

    /// The prompt (everything before the reply) and the reply, each encoded whole.
    private func encode(_ prompt: [ChatMessage], reply: String) -> (prompt: [Int32], reply: [Int32]) {
        let rendered = template.renderWithAssistantRanges(prompt + [ChatMessage(role: "assistant", content: reply)],
                                                          addGenerationPrompt: false, defaultSystemPrompt: defaultSystemPrompt)
        let bytes = Array(rendered.text.utf8)
        let range = rendered.assistantRanges.last ?? bytes.count..<bytes.count
        func tokens(_ part: ArraySlice<UInt8>) -> [Int32] {
            part.isEmpty ? [] : tokenizer.encode(String(decoding: part, as: UTF8.self), addSpecialTokens: false)
        }
        return (tokens(bytes[..<range.lowerBound]), tokens(bytes[range]))
    }
}

/// Deterministic train / held-out split and epoch order of a list of items.
public enum PhaseData {
    /// `items` split into held-out and training parts: `heldOut` items drawn by a seeded shuffle
    /// (at most half of them), the rest in their order.
    public static func split<T>(_ items: [T], heldOut: Int, seed: UInt64) -> (training: [T], heldOut: [T]) {
        let count = min(max(heldOut, 0), items.count / 2)
        let order = shuffled(Array(items.indices), seed: seed)
        let chosen = Set(order.prefix(count))
        return (items.indices.filter { !chosen.contains($0) }.map { items[$0] }, order.prefix(count).map { items[$0] })
    }

    /// A Fisher–Yates shuffle driven by SplitMix64 (independent of the Swift version).
    public static func shuffled<T>(_ items: [T], seed: UInt64) -> [T] {
        var items = items
        var random = SplitMix64(seed: seed)
        for high in items.indices.dropFirst().reversed() {
            items.swapAt(high, Int(UInt64(high + 1).multipliedFullWidth(by: random.next()).high))
        }
        return items
    }
}

/// Where an `EpochSampler` is: what its checkpoints hold (each epoch's order follows from the seed).
struct EpochSamplerState: Codable, Equatable {
    /// The seed every epoch's order is drawn from.
    var seed: UInt64
    /// Items per epoch.
    var items: Int
    /// The current epoch, from 0.
    var epoch: Int
    /// Items of the current epoch already drawn.
    var cursor: Int
}

/// Draws micro-batches of items epoch after epoch, each epoch in a new seeded order.
struct EpochSampler<Item> {
    let items: [Item]
    private(set) var state: EpochSamplerState
    /// The order of `state.epoch`, as indices into `items`.
    private var order: [Int]

    init(_ items: [Item], seed: UInt64) {
        precondition(!items.isEmpty, "nothing to sample")
        self.items = items
        state = EpochSamplerState(seed: seed, items: items.count, epoch: 0, cursor: 0)
        order = Self.order(of: items.count, seed: seed, epoch: 0)
    }

    /// The current epoch, from 0.
    var epoch: Int { state.epoch }

    /// The next `count` items (crossing into the next epoch when this one runs out).
    mutating func next(_ count: Int) -> [Item] {
        (0..<count).map { _ in
            if state.cursor == order.count {
                state.epoch += 1
                state.cursor = 0
                order = Self.order(of: items.count, seed: state.seed, epoch: state.epoch)
            }
            state.cursor += 1
            return items[order[state.cursor - 1]]
        }
    }

    /// Continues from a saved state, which must be of as many items.
    /// - Throws: `FrugalError.invalidArgument` when the state does not fit these items; the
    ///   sampler is then unchanged.
    mutating func resume(from saved: EpochSamplerState) throws {
        guard saved.items == items.count, saved.epoch >= 0, (0...items.count).contains(saved.cursor) else {
            throw FrugalError.invalidArgument("cannot resume the data at epoch \(saved.epoch), item \(saved.cursor) of \(saved.items): there are \(items.count) items now (the data or its settings changed)")
        }
        state = saved
        order = Self.order(of: items.count, seed: saved.seed, epoch: saved.epoch)
    }

    /// The order of an epoch.
    private static func order(of count: Int, seed: UInt64, epoch: Int) -> [Int] {
        PhaseData.shuffled(Array(0..<count), seed: seed &+ UInt64(epoch))
    }
}
