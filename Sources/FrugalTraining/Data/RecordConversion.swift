// RecordConversion: a parsed JSON record of each data format to a TrainingExample.
import Foundation
import FrugalFormats

/// Why one record cannot be read; the reader prefixes the file and line.
struct RecordProblem: Error {
    let message: String

    init(_ message: String) {
        self.message = message
    }
}

extension DataFormat {
    /// The training example a JSON record of this format describes.
    /// - Throws: `RecordProblem` naming the missing or mistyped field.
    func example(from record: [String: Any]) throws(RecordProblem) -> TrainingExample {
        switch self {
        case .alpaca: try Self.alpacaExample(record)
        case .messages: try Self.messagesExample(record)
        case .shareGPT: try Self.shareGPTExample(record)
        case .text: TrainingExample(text: try requiredString("text", in: record))
        }
    }

    /// The user turn is the instruction and the input joined by a newline, leaving out an
    /// empty one, as LLaMA-Factory's `AlpacaDatasetConverter` writes it.
    private static func alpacaExample(_ record: [String: Any]) throws(RecordProblem) -> TrainingExample {
        let instruction = try requiredString("instruction", in: record)
        let input = try optionalString("input", in: record) ?? ""
        let output = try requiredString("output", in: record)
        var messages: [ChatMessage] = []
        if let system = try optionalString("system", in: record), !system.isEmpty {
            messages.append(ChatMessage(role: "system", content: system))
        }
        if let history = record["history"], !(history is NSNull) {
            guard let pairs = history as? [Any] else { throw RecordProblem("field 'history' is not a list") }
            for (index, pair) in pairs.enumerated() {
                guard let turn = pair as? [Any], turn.count == 2,
                      let prompt = turn[0] as? String, let response = turn[1] as? String else {
                    throw RecordProblem("history entry \(index + 1) is not an [instruction, response] pair of strings")
                }
                messages.append(ChatMessage(role: "user", content: prompt))
                messages.append(ChatMessage(role: "assistant", content: response))
            }
        }
        let query = [instruction, input].filter { !$0.isEmpty }.joined(separator: "\n")
        messages.append(ChatMessage(role: "user", content: query))
        messages.append(ChatMessage(role: "assistant", content: output))
        return TrainingExample(messages: messages)
    }

    private static func messagesExample(_ record: [String: Any]) throws(RecordProblem) -> TrainingExample {
        let messages = try turns("messages", in: record, roleKey: "role", contentKey: "content") { role in
            ["system", "user", "assistant"].contains(role) ? role : nil
        }
        return TrainingExample(messages: messages)
    }

    private static func shareGPTExample(_ record: [String: Any]) throws(RecordProblem) -> TrainingExample {
        var messages = try turns("conversations", in: record, roleKey: "from", contentKey: "value") { from in
            switch from {
            case "system": "system"
            case "human", "user": "user"
            case "gpt", "assistant": "assistant"
            default: nil
            }
        }
        if let system = try optionalString("system", in: record), !system.isEmpty, messages.first?.role != "system" {
            messages.insert(ChatMessage(role: "system", content: system), at: 0)
        }
        return TrainingExample(messages: messages)
    }

    /// The non-empty list of turns under `key`, each an object with a role and a content string.
    /// - Parameter role: The chat role of a role string, or nil when it is not supported.
    private static func turns(_ key: String, in record: [String: Any], roleKey: String, contentKey: String,
                              role: (String) -> String?) throws(RecordProblem) -> [ChatMessage] {
        guard let value = record[key] else { throw RecordProblem("missing field '\(key)'") }
        guard let list = value as? [Any] else { throw RecordProblem("field '\(key)' is not a list") }
        guard !list.isEmpty else { throw RecordProblem("field '\(key)' is empty") }
        var messages: [ChatMessage] = []
        for (index, item) in list.enumerated() {
            let place = "\(key) entry \(index + 1)"
            guard let turn = item as? [String: Any] else { throw RecordProblem("\(place) is not an object") }
            let name: String
            let content: String
            do {
                name = try requiredString(roleKey, in: turn)
                content = try requiredString(contentKey, in: turn)
            } catch {
                throw RecordProblem("\(place): \(error.message)")
            }
            guard let chatRole = role(name) else { throw RecordProblem("\(place): unsupported role '\(name)'") }
            messages.append(ChatMessage(role: chatRole, content: content))
        }
        return messages
    }
}

/// The string field `key`; a missing or null field is an error.
private func requiredString(_ key: String, in record: [String: Any]) throws(RecordProblem) -> String {
    guard let value = try optionalString(key, in: record) else { throw RecordProblem("missing field '\(key)'") }
    return value
}

/// The string field `key`, or nil when it is missing or null.
private func optionalString(_ key: String, in record: [String: Any]) throws(RecordProblem) -> String? {
    guard let value = record[key], !(value is NSNull) else { return nil }
    guard let string = value as? String else { throw RecordProblem("field '\(key)' is not a string") }
    return string
}
