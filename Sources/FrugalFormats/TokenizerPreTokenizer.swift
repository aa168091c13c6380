// TokenizerPreTokenizer: the steps that cut normalized text into the pieces BPE merges within.

/// A stretch of text on its way to BPE.
struct TextPiece: Equatable {
    /// The text.
    var text: String
    /// Whether the piece begins the whole input (Metaspace's "first" prepend scheme asks).
    var startsInput: Bool
}

/// When a Metaspace step puts its replacement character in front of a piece.
enum PrependScheme: String, Sendable {
    /// Before every piece that does not already start with it.
    case always
    /// Only before the piece that begins the input.
    case first
    /// Never.
    case never
}

/// One pre-tokenization step (tokenizer.json's `pre_tokenizer`); steps run in order, each on
/// every piece the previous one produced. Empty pieces are dropped, as `tokenizers` does.
enum PreTokenizer: Sendable, Equatable {
    /// GPT-2's byte-level step: an optional leading space, the GPT-2 split (when `useRegex`),
    /// then every piece spelled with `ByteLevel`'s one scalar per byte.
    case byteLevel(addPrefixSpace: Bool, useRegex: Bool)
    /// A split by a regular expression, each match kept as its own piece ("Isolated").
    case split(SplitPattern)
    /// Numbers isolated: each digit alone, or each run of digits.
    case digits(individually: Bool)
    /// SentencePiece's Metaspace: spaces become `replacement`, which may be prepended, and
    /// pieces are cut before each `replacement` when `split` is set.
    case metaspace(replacement: Unicode.Scalar, prependScheme: PrependScheme, split: Bool)

    /// The pieces `piece` becomes.
    func apply(_ piece: TextPiece) -> [TextPiece] {
        switch self {
        case let .byteLevel(addPrefixSpace, useRegex):
            var text = piece.text
            if addPrefixSpace, text.utf8.first != UInt8(ascii: " ") { text = " " + text }
            let parts = useRegex ? Self.cut(text, by: SplitPattern.gpt2.split) : [text]
            return Self.pieces(parts.map(ByteLevel.encode), startingInput: piece.startsInput)
        case let .split(pattern):
            return Self.pieces(Self.cut(piece.text, by: pattern.split), startingInput: piece.startsInput)
        case let .digits(individually):
            let parts = Self.cut(piece.text) { scalars in
                Self.isolateNumbers(scalars, individually: individually)
            }
            return Self.pieces(parts, startingInput: piece.startsInput)
        case let .metaspace(replacement, prependScheme, split):
            var text = replacingLiteral(" ", with: String(replacement), in: piece.text)
            let prepend = prependScheme == .always || (prependScheme == .first && piece.startsInput)
            if prepend, text.unicodeScalars.first != replacement { text = String(replacement) + text }
            guard split else { return Self.pieces([text], startingInput: piece.startsInput) }
            let parts = Self.cut(text) { scalars in
                Self.cutBefore(replacement, in: scalars)
            }
            return Self.pieces(parts, startingInput: piece.startsInput)
        }
    }

    // MARK: - Helpers

    /// `text` cut into the consecutive scalar ranges `ranges` gives.
    private static func cut(_ text: String, by ranges: ([Unicode.Scalar]) -> [Range<Int>]) -> [String] {
        let scalars = Array(text.unicodeScalars)
        let utf8 = Array(text.utf8)
        // The UTF-8 offset of each scalar, and of the end.
        var offsets: [Int] = []
        offsets.reserveCapacity(scalars.count + 1)
        var offset = 0
        for scalar in scalars {
            offsets.append(offset)
            offset += UTF8.width(scalar)
        }
        offsets.append(offset)
        return ranges(scalars).map { range in
            String(decoding: utf8[offsets[range.lowerBound]..<offsets[range.upperBound]], as: UTF8.self)
        }
    }

    /// Non-empty pieces; only the first keeps the "starts the input" mark.
    private static func pieces(_ texts: [String], startingInput: Bool) -> [TextPiece] {
        var result: [TextPiece] = []
        for text in texts where !text.isEmpty {
            result.append(TextPiece(text: text, startsInput: startingInput && result.isEmpty))
        }
        return result
    }

    /// Ranges that isolate each number scalar (or each run of them) from the text around it.
    private static func isolateNumbers(_ scalars: [Unicode.Scalar], individually: Bool) -> [Range<Int>] {
        var ranges: [Range<Int>] = []
        var start = 0
        while start < scalars.count {
            let isNumber = ScalarClass(scalars[start]) == .number
            var end = start + 1
            if !isNumber || !individually {
                while end < scalars.count, (ScalarClass(scalars[end]) == .number) == isNumber { end += 1 }
            }
            ranges.append(start..<end)
            start = end
        }
        return ranges
    }

    /// Ranges that start at each occurrence of `delimiter` ("merged with next").
    private static func cutBefore(_ delimiter: Unicode.Scalar, in scalars: [Unicode.Scalar]) -> [Range<Int>] {
        var ranges: [Range<Int>] = []
        var start = 0
        for index in scalars.indices where index > start && scalars[index] == delimiter {
            ranges.append(start..<index)
            start = index
        }
        if start < scalars.count { ranges.append(start..<scalars.count) }
        return ranges
    }
}
