// TokenizerDecoder: the steps that turn token strings back into text.

/// One decoding step (tokenizer.json's `decoder`). Steps run in order over the list of token
/// strings, as in `tokenizers`; the result is the concatenation of what the last step leaves.
enum TokenDecoder: Sendable, Equatable {
    /// Byte-level BPE: every token's scalars are the bytes they stand for; the bytes of all
    /// tokens become one string, invalid UTF-8 replaced by U+FFFD.
    case byteLevel
    /// Replaces a literal string in each token ("▁" becomes " ").
    case replace(pattern: String, content: String)
    /// Runs of `<0xXX>` tokens become the text their bytes spell, or one U+FFFD per byte when
    /// the run is not valid UTF-8.
    case byteFallback
    /// Joins all tokens into one.
    case fuse
    /// Removes up to `start` leading and `stop` trailing `content` scalars from each token.
    case strip(content: Unicode.Scalar, start: Int, stop: Int)
    /// SentencePiece's Metaspace: `replacement` becomes a space, and in the first token it is
    /// dropped (unless the prepend scheme is `never`).
    case metaspace(replacement: Unicode.Scalar, prependScheme: PrependScheme)

    /// The text of `tokens` after `steps`; with no steps the tokens are joined by spaces.
    static func decode(_ tokens: [String], steps: [TokenDecoder]) -> String {
        guard !steps.isEmpty else { return tokens.joined(separator: " ") }
        var tokens = tokens
        for step in steps {
            tokens = step.apply(tokens)
        }
        return tokens.joined()
    }

    /// The tokens after this step.
    private func apply(_ tokens: [String]) -> [String] {
        switch self {
        case .byteLevel:
            var bytes: [UInt8] = []
            for token in tokens {
                ByteLevel.decode(token, into: &bytes)
            }
            return [String(decoding: bytes, as: UTF8.self)]
        case let .replace(pattern, content):
            return tokens.map { replacingLiteral(pattern, with: content, in: $0) }
        case .byteFallback:
            return Self.fuseByteTokens(tokens)
        case .fuse:
            return [tokens.joined()]
        case let .strip(content, start, stop):
            return tokens.map { Self.strip($0, content: content, start: start, stop: stop) }
        case let .metaspace(replacement, prependScheme):
            return tokens.enumerated().map { index, token in
                var scalars = String.UnicodeScalarView()
                for scalar in token.unicodeScalars {
                    if scalar != replacement {
                        scalars.append(scalar)
                    } else if index > 0 || prependScheme == .never {
                        scalars.append(" ")
                    }
                }
                return String(scalars)
            }
        }
    }

    /// `tokens` with each run of byte tokens replaced by the text of its bytes.
    private static func fuseByteTokens(_ tokens: [String]) -> [String] {
        var result: [String] = []
        var bytes: [UInt8] = []
        func flush() {
            guard !bytes.isEmpty else { return }
            if let text = String(validating: bytes, as: UTF8.self) {
                result.append(text)
            } else {
                result.append(contentsOf: repeatElement("\u{FFFD}", count: bytes.count))
            }
            bytes.removeAll()
        }
        for token in tokens {
            if let byte = byteTokenValue(token) {
                bytes.append(byte)
            } else {
                flush()
                result.append(token)
            }
        }
        flush()
        return result
    }

    /// `token` without up to `start` leading and `stop` trailing `content` scalars.
    private static func strip(_ token: String, content: Unicode.Scalar, start: Int, stop: Int) -> String {
        let scalars = Array(token.unicodeScalars)
        var lower = 0
        while lower < min(start, scalars.count), scalars[lower] == content { lower += 1 }
        var upper = scalars.count
        while scalars.count - upper < stop, upper > lower, scalars[upper - 1] == content { upper -= 1 }
        return String(String.UnicodeScalarView(scalars[lower..<upper]))
    }
}

/// The byte a `<0xXX>` token stands for, or nil for any other token.
func byteTokenValue(_ token: String) -> UInt8? {
    let utf8 = Array(token.utf8)
    guard utf8.count == 6, utf8[0] == UInt8(ascii: "<"), utf8[1] == UInt8(ascii: "0"),
          utf8[2] == UInt8(ascii: "x"), utf8[5] == UInt8(ascii: ">") else { return nil }
    return UInt8(String(decoding: utf8[3..<5], as: UTF8.self), radix: 16)
}

