// TokenizerAddedTokens: tokens matched verbatim in the input before it reaches BPE.

/// A token found in the text as it is written, before normalization and BPE: tokenizer.json's
/// `added_tokens`, or a GGUF control or user-defined token. Special ones (`<|im_start|>`,
/// `<s>`) can be skipped when decoding.
public struct AddedToken: Sendable, Equatable {
    /// The token's id.
    public let id: Int32
    /// The text that stands for it.
    public let content: String
    /// Whether it is a special (control) token rather than ordinary vocabulary.
    public let isSpecial: Bool
    /// Whether whitespace just before a match belongs to the token (`lstrip`).
    public let stripsLeft: Bool
    /// Whether whitespace just after a match belongs to the token (`rstrip`).
    public let stripsRight: Bool
    /// Whether the token matches only as a whole word (`single_word`).
    public let singleWord: Bool
    /// Whether it is matched in normalized text rather than in the raw input (`normalized`).
    public let isNormalized: Bool

    /// An added token; the flags default to those of a special token.
    public init(id: Int32, content: String, isSpecial: Bool, stripsLeft: Bool = false, stripsRight: Bool = false,
                singleWord: Bool = false, isNormalized: Bool = false) {
        self.id = id
        self.content = content
        self.isSpecial = isSpecial
        self.stripsLeft = stripsLeft
        self.stripsRight = stripsRight
        self.singleWord = singleWord
        self.isNormalized = isNormalized
    }
}

/// A part of the input once added tokens are found in it.
enum InputSegment: Equatable {
    /// Text between added tokens, and whether it begins the whole input.
    case text(String, startsInput: Bool)
    /// An added token's id.
    case token(Int32)
}

/// Finds added tokens in text as `tokenizers` does: the leftmost match, the longest among those
/// that start there. It compares UTF-8 bytes: a pattern's first byte is never a continuation
/// byte, so a match always starts and ends between scalars.
struct AddedTokenMatcher: Sendable {
    private struct Pattern: Sendable {
        let utf8: [UInt8]
        let token: AddedToken
    }

    /// Patterns by their first byte, longest first.
    private let patterns: [[Pattern]]
    private let isEmpty: Bool

    /// A matcher for `tokens`, each searched for as `spelling` writes it.
    init(tokens: [AddedToken], spelling: (AddedToken) -> String = { $0.content }) {
        var patterns = [[Pattern]](repeating: [], count: 256)
        for token in tokens {
            let utf8 = Array(spelling(token).utf8)
            guard let first = utf8.first else { continue }
            patterns[Int(first)].append(Pattern(utf8: utf8, token: token))
        }
        self.patterns = patterns.map { $0.sorted { $0.utf8.count > $1.utf8.count } }
        isEmpty = tokens.isEmpty
    }

    /// `text` cut into added tokens and the text between them; special tokens are found only
    /// when `includeSpecial` is set. `startsInput` says whether `text` begins the input.
    func split(_ text: String, startsInput: Bool, includeSpecial: Bool) -> [InputSegment] {
        guard !text.isEmpty else { return [] }
        guard !isEmpty else { return [.text(text, startsInput: startsInput)] }
        let utf8 = Array(text.utf8)
        var segments: [InputSegment] = []
        var segmentStart = 0
        func flushText(upTo end: Int) {
            guard end > segmentStart else { return }
            let part = segmentStart == 0 && end == utf8.count
                ? text : String(decoding: utf8[segmentStart..<end], as: UTF8.self)
            segments.append(.text(part, startsInput: startsInput && segmentStart == 0))
        }
        var index = 0
        while index < utf8.count {
            guard let pattern = match(in: utf8, at: index, includeSpecial: includeSpecial) else {
                index += 1
                continue
            }
            var start = index, end = index + pattern.utf8.count
            if pattern.token.stripsLeft {
                while start > segmentStart, let (scalar, width) = scalar(in: utf8, before: start),
                      scalar.properties.isWhitespace { start -= width }
            }
            if pattern.token.stripsRight {
                while let (scalar, width) = scalar(in: utf8, at: end), scalar.properties.isWhitespace { end += width }
            }
            flushText(upTo: start)
            segments.append(.token(pattern.token.id))
            segmentStart = end
            index = end
        }
        flushText(upTo: utf8.count)
        return segments
    }

    /// The longest pattern that matches at `index`, or nil.
    private func match(in utf8: [UInt8], at index: Int, includeSpecial: Bool) -> Pattern? {
        for pattern in patterns[Int(utf8[index])] where includeSpecial || !pattern.token.isSpecial {
            let end = index + pattern.utf8.count
            guard end <= utf8.count, utf8[index..<end].elementsEqual(pattern.utf8) else { continue }
            if pattern.token.singleWord {
                if let (before, _) = scalar(in: utf8, before: index), isWordScalar(before) { continue }
                if let (after, _) = scalar(in: utf8, at: end), isWordScalar(after) { continue }
            }
            return pattern
        }
        return nil
    }

    /// The scalar that starts at byte `index` and its width, or nil at the end.
    private func scalar(in utf8: [UInt8], at index: Int) -> (Unicode.Scalar, Int)? {
        guard index < utf8.count else { return nil }
        var end = index + 1
        while end < utf8.count, utf8[end] & 0xC0 == 0x80 { end += 1 }
        return String(decoding: utf8[index..<end], as: UTF8.self).unicodeScalars.first.map { ($0, end - index) }
    }

    /// The scalar that ends at byte `index` and its width, or nil at the start.
    private func scalar(in utf8: [UInt8], before index: Int) -> (Unicode.Scalar, Int)? {
        guard index > 0 else { return nil }
        var start = index - 1
        while start > 0, utf8[start] & 0xC0 == 0x80 { start -= 1 }
        return String(decoding: utf8[start..<index], as: UTF8.self).unicodeScalars.first.map { ($0, index - start) }
    }

    /// A letter, digit or underscore: what a single-word token must not touch.
    private func isWordScalar(_ scalar: Unicode.Scalar) -> Bool {
        scalar == "_" || scalar.properties.isAlphabetic || ScalarClass(scalar) == .number
    }
}
