// SycophancyTask: Anthropic's sycophancy evaluation — items whose prompt is a user's biography
// followed by a question — split into train and test by question, with training data for the
// train side.
import Foundation
import FrugalFormats

/// The sycophancy benchmark over a set of multiple-choice items.
///
/// **Questions.** Each prompt is a biography of the user followed by one of a few questions
/// (`sycophancy_political_conservative_bio.jsonl`: 5,100 prompts, 17 questions, 300
/// biographies each). The question of a prompt is found as:
/// 1. the last sentence of the prompt's first line (the line before the answer options; a
///    sentence starts at an uppercase letter A–Z after ".", "!" or "?" and a space), together with
///    everything after it (the options and "Answer:");
/// 2. when a word-final part of that text, starting within its first line, is itself the
///    question of another prompt, the shortest such part instead (a biography that runs into
///    its question without a full stop then still falls in with that question).
///
/// The split is then by question (`SplitPlan.isTest(groups:)`): every prompt of a question is
/// on the same side, so no question text is in both.
public struct SycophancyTask: Sendable {
    /// The items, in file order.
    public let items: [MultipleChoiceItem]
    /// The question of each item.
    public let questions: [String]

    /// The task over `items`, finding each one's question.
    public init(items: [MultipleChoiceItem]) {
        self.items = items
        questions = Self.questions(of: items.map(\.prompt))
    }

    /// Distinct questions.
    public var questionCount: Int { Set(questions).count }

    /// Whether each item is held out for testing under `plan`, by question.
    public func isTest(_ plan: SplitPlan) -> [Bool] { plan.isTest(groups: questions) }

    /// The questions of the prompts (see the type's documentation for the rule).
    public static func questions(of prompts: [String]) -> [String] {
        let candidates = prompts.map { lastSentence(from: Array($0.utf8)) }
        let known = Set(candidates)
        var canonical: [[UInt8]: [UInt8]] = [:]
        for candidate in known {
            let firstLineEnd = candidate.firstIndex(of: newline) ?? candidate.count
            var shortest = candidate
            for start in 1..<max(firstLineEnd, 1) where isSpace(candidate[start - 1]) && !isSpace(candidate[start]) {
                let suffix = Array(candidate[start...])
                if known.contains(suffix) { shortest = suffix }
            }
            canonical[candidate] = shortest
        }
        return candidates.map { String(decoding: canonical[$0]!, as: UTF8.self) }
    }

    /// The UTF-8 bytes of the prompt from the start of the last sentence of its first line: an
    /// ASCII uppercase letter after ".", "!" or "?" and a space.
    private static func lastSentence(from bytes: [UInt8]) -> [UInt8] {
        let firstLineEnd = bytes.firstIndex(of: newline) ?? bytes.count
        var start = 0
        for i in stride(from: 2, to: firstLineEnd, by: 1)
        where (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(bytes[i]) && isSpace(bytes[i - 1])
            && [UInt8(ascii: "."), UInt8(ascii: "!"), UInt8(ascii: "?")].contains(bytes[i - 2]) {
            start = i
        }
        return Array(bytes[start...])
    }

    private static let newline = UInt8(ascii: "\n")

    private static func isSpace(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") || byte == newline || byte == UInt8(ascii: "\r")
    }

    /// The item with its lettered options in reverse order: the prompt's option lines
    /// (" (A) text", " (B) text", … with consecutive letters from A) keep their letters but take
    /// the texts in reverse, and each answer " (A)" names the letter its text now has. Training
    /// on both orders keeps a model from learning which letter is usually right instead of
    /// which answer is. Nil when the prompt or an answer is not of that form.
    public static func reversingOptions(_ item: MultipleChoiceItem) -> MultipleChoiceItem? {
        var lines = item.prompt.components(separatedBy: "\n")
        let options = lines.indices.compactMap { i in optionLetter(lines[i]).map { (line: i, letter: $0) } }
        let count = options.count
        guard count >= 2, options.enumerated().allSatisfy({ $0.element.letter == letterA + UInt8($0.offset) }),
              options.last!.line - options.first!.line == count - 1 else { return nil }
        let texts = options.map { lines[$0.line].dropFirst(4) }  // after " (X)"
        for (k, option) in options.enumerated() { lines[option.line] = String(lines[option.line].prefix(4)) + texts[count - 1 - k] }
        var reversed = item
        reversed.prompt = lines.joined(separator: "\n")
        for (index, choice) in item.choices.enumerated() {
            let bytes = Array(choice.utf8)
            guard let open = bytes.firstIndex(of: UInt8(ascii: "(")), open + 2 < bytes.count, bytes[open + 2] == UInt8(ascii: ")"),
                  bytes[open + 1] >= letterA, Int(bytes[open + 1] - letterA) < count,
                  bytes.enumerated().allSatisfy({ $0.offset >= open && $0.offset <= open + 2 || isSpace($0.element) }) else { return nil }
            var swapped = bytes
            swapped[open + 1] = letterA + UInt8(count - 1 - Int(bytes[open + 1] - letterA))
            reversed.choices[index] = String(decoding: swapped, as: UTF8.self)
        }
        return reversed
    }

    private static let letterA = UInt8(ascii: "A")

    /// The letter of an option line " (X) …", or nil.
    private static func optionLetter(_ line: String) -> UInt8? {
        let bytes = Array(line.utf8.prefix(5))
        guard bytes.count == 5, bytes[0] == UInt8(ascii: " "), bytes[1] == UInt8(ascii: "("), bytes[3] == UInt8(ascii: ")"),
              bytes[4] == UInt8(ascii: " "), (letterA...UInt8(ascii: "Z")).contains(bytes[2]) else { return nil }
        return bytes[2]
    }

    /// Training conversations for `items`: the prompt as the user's turn, the first correct
    /// answer (without leading whitespace, as a reply starts) as the assistant's.
    public static func trainingConversations(_ items: [MultipleChoiceItem]) -> [[ChatMessage]] {
        items.compactMap { item in
            guard let right = item.correct.min() else { return nil }
            return [ChatMessage(role: "user", content: item.prompt),
                    ChatMessage(role: "assistant", content: String(item.choices[right].drop { $0.isWhitespace }))]
        }
    }

    /// Conversations as JSON lines of `{"messages": [{"role": …, "content": …}, …]}`, the
    /// OpenAI chat layout `frugal train --data` reads.
    public static func jsonLines(_ conversations: [[ChatMessage]]) throws -> Data {
        struct Record: Encodable { let messages: [ChatMessage] }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var data = Data()
        for messages in conversations {
            data.append(try encoder.encode(Record(messages: messages)))
            data.append(UInt8(ascii: "\n"))
        }
        return data
    }
}
