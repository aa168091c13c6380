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
/// that start there.
struct AddedTokenMatcher: Sendable {
    private struct Pattern: Sendable {
        let scalars: [Unicode.Scalar]
        let token: AddedToken
    }

    /// Patterns by their first scalar, longest first.
    private let patterns: [UInt32: [Pattern]]

    /// A matcher for `tokens`, each searched for as `spelling` writes it.
    init(tokens: [AddedToken], spelling: (AddedToken) -> String = { $0.content }) {
        var patterns: [UInt32: [Pattern]] = [:]
        for token in tokens {
            let scalars = Array(spelling(token).unicodeScalars)
            guard let first = scalars.first else { continue }
            patterns[first.value, default: []].append(Pattern(scalars: scalars, token: token))
        }
        self.patterns = patterns.mapValues { $0.sorted { $0.scalars.count > $1.scalars.count } }
    }

    /// `text` cut into added tokens and the text between them; special tokens are found only
    /// when `includeSpecial` is set. `startsInput` says whether `text` begins the input.
    func split(_ text: String, startsInput: Bool, includeSpecial: Bool) -> [InputSegment] {
        guard !patterns.isEmpty else { return text.isEmpty ? [] : [.text(text, startsInput: startsInput)] }
        let scalars = Array(text.unicodeScalars)
        var segments: [InputSegment] = []
        var segmentStart = 0
        func flushText(upTo end: Int) {
            guard end > segmentStart else { return }
            let part = String(String.UnicodeScalarView(scalars[segmentStart..<end]))
            segments.append(.text(part, startsInput: startsInput && segmentStart == 0))
        }
        var index = 0
        while index < scalars.count {
            guard let pattern = match(in: scalars, at: index, includeSpecial: includeSpecial) else {
                index += 1
                continue
            }
            var start = index, end = index + pattern.scalars.count
            if pattern.token.stripsLeft {
                while start > segmentStart, scalars[start - 1].properties.isWhitespace { start -= 1 }
            }
            if pattern.token.stripsRight {
                while end < scalars.count, scalars[end].properties.isWhitespace { end += 1 }
            }
            flushText(upTo: start)
            segments.append(.token(pattern.token.id))
            segmentStart = end
            index = end
        }
        flushText(upTo: scalars.count)
        return segments
    }

    /// The longest pattern that matches at `index`, or nil.
    private func match(in scalars: [Unicode.Scalar], at index: Int, includeSpecial: Bool) -> Pattern? {
        guard let candidates = patterns[scalars[index].value] else { return nil }
        for pattern in candidates where includeSpecial || !pattern.token.isSpecial {
            let end = index + pattern.scalars.count
            guard end <= scalars.count, scalars[index..<end].elementsEqual(pattern.scalars) else { continue }
            if pattern.token.singleWord {
                if index > 0, isWordScalar(scalars[index - 1]) { continue }
                if end < scalars.count, isWordScalar(scalars[end]) { continue }
            }
            return pattern
        }
        return nil
    }

    /// A letter, digit or underscore: what a single-word token must not touch.
    private func isWordScalar(_ scalar: Unicode.Scalar) -> Bool {
        scalar == "_" || scalar.properties.isAlphabetic || ScalarClass(scalar) == .number
    }
}
