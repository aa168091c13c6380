// MultipleChoiceData: reads multiple-choice items from JSON lines — the two sycophancy layouts
// of Anthropic's evals and a plain `choices` + `answer` layout — naming the file and line of
// any bad record.
import Foundation
import FrugalCore

/// The record layouts a multiple-choice file may use (each record is recognized by its fields).
public enum MultipleChoiceLayout: String, Sendable, Codable, CaseIterable {
    /// `prompt`, `corrects`, `incorrects` (lists of answer strings, or single strings), as in
    /// `sycophancy_political_conservative_bio.jsonl`: the incorrect answers are the ones that
    /// agree with the user's stated view, so they count as sycophantic.
    case correctsIncorrects = "corrects-incorrects"
    /// `question`, `answer_matching_behavior`, `answer_not_matching_behavior` (strings or lists),
    /// as in Anthropic's `sycophancy_on_*.jsonl`: the matching answers are sycophantic, the
    /// others correct.
    case matchingBehavior = "matching-behavior"
    /// `prompt` (or `question`), `choices` (a list of strings), and `answer`: the index of the
    /// correct choice, its text, or a list of either. No answer is marked sycophantic.
    case choices

    /// The layout a record's fields announce, or nil.
    static func detect(_ record: [String: Any]) -> MultipleChoiceLayout? {
        if record["corrects"] != nil || record["incorrects"] != nil { return .correctsIncorrects }
        if record["answer_matching_behavior"] != nil || record["answer_not_matching_behavior"] != nil { return .matchingBehavior }
        if record["choices"] != nil { return .choices }
        return nil
    }
}

/// The items of a multiple-choice data file.
public struct MultipleChoiceData: Sendable {
    /// The items, in file order; each knows its line.
    public let items: [MultipleChoiceItem]
    /// The layouts the records used.
    public let layouts: Set<MultipleChoiceLayout>

    /// Reads a file of JSON lines (one record per line, blank lines ignored) or one JSON array
    /// of records (then a record's "line" is its position in the array).
    /// - Throws: `FrugalError.missingFile` when the file cannot be read;
    ///   `FrugalError.malformedFile` with a problem starting "line N:" for a bad record, or
    ///   when the file holds no record.
    public init(contentsOf path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw FrugalError.missingFile(path: path, what: "multiple-choice data file")
        }
        try self.init(data: data, path: path)
    }

    /// Reads records from bytes; `path` names them in errors.
    public init(data: Data, path: String) throws {
        var records: [(line: Int, value: Result<Any, RecordProblem>)] = []
        let bytes = [UInt8](data)
        let isSpace: (UInt8) -> Bool = { $0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }
        if bytes.first(where: { !isSpace($0) }) == UInt8(ascii: "[") {
            guard let array = try? JSONSerialization.jsonObject(with: data) as? [Any] else {
                throw FrugalError.malformedFile(path: path, problem: "not a valid JSON array (nor JSON lines)")
            }
            records = array.enumerated().map { ($0 + 1, .success($1)) }
        } else {
            for (index, line) in bytes.split(separator: 0x0A, omittingEmptySubsequences: false).enumerated()
            where line.contains(where: { !isSpace($0) }) {
                let parsed = try? JSONSerialization.jsonObject(with: Data(line))
                records.append((index + 1, parsed.map { .success($0) } ?? .failure(RecordProblem("not valid JSON"))))
            }
        }
        var items: [MultipleChoiceItem] = []
        var layouts = Set<MultipleChoiceLayout>()
        for (line, value) in records {
            do throws(RecordProblem) {
                guard let record = try value.get() as? [String: Any] else { throw RecordProblem("the record is not a JSON object") }
                guard let layout = MultipleChoiceLayout.detect(record) else {
                    throw RecordProblem("cannot tell the layout: no field 'corrects', 'answer_matching_behavior' or 'choices'")
                }
                items.append(try Self.item(record, layout: layout, line: line))
                layouts.insert(layout)
            } catch {
                throw FrugalError.malformedFile(path: path, problem: "line \(line): \(error.message)")
            }
        }
        guard !items.isEmpty else { throw FrugalError.malformedFile(path: path, problem: "no records") }
        self.items = items
        self.layouts = layouts
    }

    private static func item(_ record: [String: Any], layout: MultipleChoiceLayout, line: Int) throws(RecordProblem) -> MultipleChoiceItem {
        switch layout {
        case .correctsIncorrects:
            return try pairedItem(prompt: try string("prompt", in: record), right: try answers("corrects", in: record),
                                  sycophantic: try answers("incorrects", in: record), line: line)
        case .matchingBehavior:
            return try pairedItem(prompt: try string("question", in: record),
                                  right: try answers("answer_not_matching_behavior", in: record),
                                  sycophantic: try answers("answer_matching_behavior", in: record), line: line)
        case .choices:
            let prompt = try record["prompt"] != nil ? string("prompt", in: record) : string("question", in: record)
            guard let choices = record["choices"] as? [String], choices.count >= 2 else {
                throw RecordProblem("field 'choices' is not a list of at least two strings")
            }
            guard let answer = record["answer"], !(answer is NSNull) else { throw RecordProblem("missing field 'answer'") }
            var correct = Set<Int>()
            for value in answer as? [Any] ?? [answer] {
                if let text = value as? String, let index = choices.firstIndex(of: text) {
                    correct.insert(index)
                } else if let number = value as? NSNumber, let index = Int(exactly: number.doubleValue),
                          choices.indices.contains(index) {
                    correct.insert(index)
                } else {
                    throw RecordProblem("field 'answer' must be a choice's index (0-based) or text, not \(value)")
                }
            }
            return MultipleChoiceItem(prompt: prompt, choices: choices, correct: correct, line: line)
        }
    }

    /// An item whose choices are the right answers, then the sycophantic ones.
    private static func pairedItem(prompt: String, right: [String], sycophantic: [String], line: Int) throws(RecordProblem) -> MultipleChoiceItem {
        if let both = right.first(where: sycophantic.contains) {
            throw RecordProblem("answer \(both.debugDescription) is listed as both right and sycophantic")
        }
        return MultipleChoiceItem(prompt: prompt, choices: right + sycophantic, correct: Set(right.indices),
                                  sycophantic: Set(right.count..<right.count + sycophantic.count), line: line)
    }

    private static func string(_ key: String, in record: [String: Any]) throws(RecordProblem) -> String {
        guard let value = record[key], !(value is NSNull) else { throw RecordProblem("missing field '\(key)'") }
        guard let text = value as? String else { throw RecordProblem("field '\(key)' is not a string") }
        return text
    }

    /// A non-empty list of answer strings, or one string.
    private static func answers(_ key: String, in record: [String: Any]) throws(RecordProblem) -> [String] {
        guard let value = record[key], !(value is NSNull) else { throw RecordProblem("missing field '\(key)'") }
        if let text = value as? String { return [text] }
        guard let list = value as? [String] else { throw RecordProblem("field '\(key)' is not a string or a list of strings") }
        guard !list.isEmpty else { throw RecordProblem("field '\(key)' is empty") }
        return list
    }
}

/// Why one record cannot be read; the reader adds the file and line.
struct RecordProblem: Error {
    let message: String

    init(_ message: String) { self.message = message }
}
