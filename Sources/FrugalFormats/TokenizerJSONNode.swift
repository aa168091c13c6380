// TokenizerJSONNode: typed access to a parsed tokenizer file, with errors that name the key.

import FrugalCore

/// A JSON value and where it is: the file and the key path, for error messages.
struct JSONNode {
    /// The value.
    let value: JSONValue
    /// The file it was read from.
    let file: String
    /// The key path inside the file, as in `model.vocab`.
    let path: String

    /// An error naming the file and this node's key path.
    func error(_ problem: String) -> FrugalError {
        .malformedFile(path: file, problem: path.isEmpty ? problem : "\(path): \(problem)")
    }

    /// Whether the value is null (a missing key reads as null).
    var isNull: Bool {
        if case .null = value { return true }
        return false
    }

    /// The member `key` of an object; null when absent.
    subscript(key: String) -> JSONNode {
        var member = JSONValue.null
        if case let .object(members) = value, let found = members.first(where: { $0.key == key }) {
            member = found.value
        }
        return JSONNode(value: member, file: file, path: path.isEmpty ? key : "\(path).\(key)")
    }

    /// The value as a string.
    func string() throws -> String {
        guard case let .string(text) = value else { throw error("expected a string") }
        return text
    }

    /// The value as a string, or nil when null.
    func optionalString() throws -> String? {
        isNull ? nil : try string()
    }

    /// The value as a Boolean, or `fallback` when null.
    func bool(default fallback: Bool) throws -> Bool {
        if isNull { return fallback }
        guard case let .bool(flag) = value else { throw error("expected true or false") }
        return flag
    }

    /// The value as an integer within `range`.
    func int(in range: ClosedRange<Int>) throws -> Int {
        guard case let .integer(number) = value, range.contains(number) else {
            throw error("expected an integer in \(range.lowerBound)...\(range.upperBound)")
        }
        return number
    }

    /// The elements of an array.
    func array() throws -> [JSONNode] {
        guard case let .array(elements) = value else { throw error("expected an array") }
        return elements.enumerated().map { JSONNode(value: $1, file: file, path: "\(path)[\($0)]") }
    }
}
