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
