// TokenizerSplitPattern: the regular expressions byte-level tokenizers cut text with,
// written as scanners over Unicode scalars.

/// A pre-tokenizer regular expression that Frugal implements as a hand-written scanner.
///
/// Each scanner reproduces the leftmost-first alternation of its regular expression, including
/// the backtracking of `\s+(?!\S)` (a run of spaces leaves its last space to the next word).
/// `\p{L}` and `\p{N}` are the Unicode general categories L* and N*, `\s` is White_Space.
enum SplitPattern: Sendable, Equatable {
    /// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
    case gpt2
    /// Llama 3: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
    /// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
    case llama3
    /// Qwen 2: the Llama 3 expression with single digits (`\p{N}` for `\p{N}{1,3}`).
    case qwen2

    static let gpt2Source = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    static let llama3Source =
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let qwen2Source =
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    /// The scanner for a regular expression's source text, or nil when Frugal has none for it.
    init?(regex: String) {
        switch regex {
        case Self.gpt2Source: self = .gpt2
        case Self.llama3Source: self = .llama3
        case Self.qwen2Source: self = .qwen2
        default: return nil
        }
    }

    /// The consecutive pieces `scalars` splits into (every scalar belongs to one piece).
    func split(_ scalars: [Unicode.Scalar]) -> [Range<Int>] {
        var pieces: [Range<Int>] = []
        var start = 0
        while start < scalars.count {
            let end: Int
            switch self {
            case .gpt2: end = Self.gpt2Match(scalars, at: start)
            case .llama3: end = Self.llama3Match(scalars, at: start, maxDigits: 3)
            case .qwen2: end = Self.llama3Match(scalars, at: start, maxDigits: 1)
            }
            pieces.append(start..<end)
            start = end
        }
        return pieces
    }

    // MARK: - Scanners

    /// The end of the GPT-2 match that starts at `i`.
    private static func gpt2Match(_ s: [Unicode.Scalar], at i: Int) -> Int {
        if s[i] == "'", let end = contraction(s, at: i, ignoringCase: false) { return end }
        let first = ScalarClass(s[i])
        let second = i + 1 < s.count ? ScalarClass(s[i + 1]) : nil
        // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional space, then a run of one class.
        if first != .space { return run(of: first, in: s, from: i + 1) }
        if s[i] == " ", let second, second != .space { return run(of: second, in: s, from: i + 2) }
        return whitespaceMatch(s, at: i)
    }

    /// The end of the Llama 3 (or Qwen 2) match that starts at `i`.
    private static func llama3Match(_ s: [Unicode.Scalar], at i: Int, maxDigits: Int) -> Int {
        if s[i] == "'", let end = contraction(s, at: i, ignoringCase: true) { return end }
        let first = ScalarClass(s[i])
        let second = i + 1 < s.count ? ScalarClass(s[i + 1]) : nil
        // `[^\r\n\p{L}\p{N}]?\p{L}+`
        if first == .letter { return run(of: .letter, in: s, from: i + 1) }
        if first != .number, !isLineBreak(s[i]), second == .letter { return run(of: .letter, in: s, from: i + 2) }
        // `\p{N}{1,3}`
        if first == .number {
            var end = i + 1
            while end < s.count, end - i < maxDigits, ScalarClass(s[end]) == .number { end += 1 }
            return end
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
        if first == .other { return lineBreaks(s, from: run(of: .other, in: s, from: i + 1)) }
        if s[i] == " ", second == .other { return lineBreaks(s, from: run(of: .other, in: s, from: i + 2)) }
        // `\s*[\r\n]+`: the spaces up to and including the run's last line break.
        let runEnd = run(of: .space, in: s, from: i + 1)
        if let lastBreak = (i..<runEnd).last(where: { isLineBreak(s[$0]) }) { return lastBreak + 1 }
        return whitespaceMatch(s, at: i)
    }

    /// `\s+(?!\S)|\s+` at a whitespace scalar: a run that ends the text is taken whole; a
    /// longer run leaves its last scalar to the word that follows; a single scalar is taken.
    private static func whitespaceMatch(_ s: [Unicode.Scalar], at i: Int) -> Int {
        let end = run(of: .space, in: s, from: i + 1)
        if end == s.count || end - i == 1 { return end }
        return end - 1
    }

    /// The end of `'s|'t|'re|'ve|'m|'ll|'d` at an apostrophe, or nil.
    private static func contraction(_ s: [Unicode.Scalar], at i: Int, ignoringCase: Bool) -> Int? {
        func letter(_ offset: Int) -> Unicode.Scalar? {
            guard i + offset < s.count else { return nil }
            let scalar = s[i + offset]
            guard ignoringCase else { return scalar }
            switch scalar.value {
            case 0x41...0x5A: return Unicode.Scalar(scalar.value + 0x20)
            case 0x17F: return "s"  // LATIN SMALL LETTER LONG S case-folds to s
            default: return scalar
            }
        }
        switch letter(1) {
        case "s", "t", "m", "d": return i + 2
        case "r", "v": return letter(2) == "e" ? i + 3 : nil
        case "l": return letter(2) == "l" ? i + 3 : nil
        default: return nil
        }
    }

    /// The end of the run of `kind` scalars that starts at `start`.
    private static func run(of kind: ScalarClass, in s: [Unicode.Scalar], from start: Int) -> Int {
        var end = start
        while end < s.count, ScalarClass(s[end]) == kind { end += 1 }
        return end
    }

    /// The end of the run of `\r` and `\n` that starts at `start`.
    private static func lineBreaks(_ s: [Unicode.Scalar], from start: Int) -> Int {
        var end = start
        while end < s.count, isLineBreak(s[end]) { end += 1 }
        return end
    }

    private static func isLineBreak(_ scalar: Unicode.Scalar) -> Bool {
        scalar == "\n" || scalar == "\r"
    }
}

/// The four classes the split patterns tell scalars apart by: `\p{L}`, `\p{N}`, `\s`, the rest.
enum ScalarClass: Equatable {
    case letter, number, space, other

    init(_ scalar: Unicode.Scalar) {
        if scalar.isASCII {
            switch scalar.value {
            case 0x41...0x5A, 0x61...0x7A: self = .letter
            case 0x30...0x39: self = .number
            case 0x09...0x0D, 0x20: self = .space
            default: self = .other
            }
            return
        }
        switch scalar.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            self = .letter
        case .decimalNumber, .letterNumber, .otherNumber:
            self = .number
        default:
            self = scalar.properties.isWhitespace ? .space : .other
        }
    }
}
