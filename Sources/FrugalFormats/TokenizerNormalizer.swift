// TokenizerNormalizer: the rewrites applied to text before it is split and merged.

import Foundation

/// One normalization step of a tokenizer (tokenizer.json's `normalizer`), applied in order to
/// each stretch of text between added tokens.
enum Normalizer: Sendable, Equatable {
    /// Puts a string in front of non-empty text (Llama 2 prepends "▁").
    case prepend(String)
    /// Replaces every occurrence of a literal string (Llama 2 replaces " " with "▁").
    case replace(pattern: String, content: String)
    /// Unicode canonical composition.
    case nfc
    /// Unicode canonical decomposition.
    case nfd
    /// Unicode compatibility composition.
    case nfkc
    /// Unicode compatibility decomposition.
    case nfkd
    /// Lowercases with the full Unicode mapping.
    case lowercase

    /// `text` after this step.
    func apply(_ text: String) -> String {
        switch self {
        case let .prepend(prefix):
            return text.isEmpty ? text : prefix + text
        case let .replace(pattern, content):
            return replacingLiteral(pattern, with: content, in: text)
        case .nfc: return text.precomposedStringWithCanonicalMapping
        case .nfd: return text.decomposedStringWithCanonicalMapping
        case .nfkc: return text.precomposedStringWithCompatibilityMapping
        case .nfkd: return text.decomposedStringWithCompatibilityMapping
        case .lowercase: return text.lowercased()
        }
    }
}

/// `text` with every occurrence of `pattern` replaced, comparing UTF-8 bytes (not Swift's
/// canonical equivalence, which would treat "é" and "e\u{301}" as one string).
func replacingLiteral(_ pattern: String, with content: String, in text: String) -> String {
    let pattern = Array(pattern.utf8)
    guard !pattern.isEmpty else { return text }
    let source = Array(text.utf8)
    guard source.count >= pattern.count else { return text }
    var result: [UInt8] = []
    result.reserveCapacity(source.count)
    var index = 0
    while index < source.count {
        if source[index] == pattern[0], index + pattern.count <= source.count,
           source[index..<index + pattern.count].elementsEqual(pattern) {
            result.append(contentsOf: content.utf8)
            index += pattern.count
        } else {
            result.append(source[index])
            index += 1
        }
    }
    return String(decoding: result, as: UTF8.self)
}
