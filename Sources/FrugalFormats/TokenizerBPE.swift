// TokenizerBPE: byte-pair encoding of one pre-tokenized piece, merging by rank or by score.

/// The order in which BPE merges neighbouring symbols.
enum MergeOrder: Sendable {
    /// tokenizer.json and GGUF `merges`: the pair with the lowest rank merges first. Keys are
    /// `left << 32 | right` token ids.
    case ranks([UInt64: RankedMerge])
    /// SentencePiece GGUFs without merges: the neighbours whose concatenation is the token with
    /// the highest score merge first (llama.cpp's rule), indexed by token id.
    case scores([Float])

    /// The key of a pair of token ids in `ranks`.
    static func key(_ left: Int32, _ right: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
    }
}

/// One entry of a merge list: its rank, and the token the pair becomes.
struct RankedMerge: Sendable {
    /// The merge's position in the list; lower merges first.
    var rank: Int32
    /// The id of the merged token.
    var result: Int32
}

/// A BPE model: a vocabulary, its merges, and what to do with characters it lacks.
struct BPEModel: Sendable {
    /// The model's tokens.
    let vocabulary: Vocabulary
    /// How pairs are chosen.
    let order: MergeOrder
    /// The ids of the `<0xXX>` byte tokens, -1 where absent; used when `byteFallback` is set.
    let byteTokenIDs: [Int32]
    /// Spell a character the vocabulary lacks with byte tokens (SentencePiece style).
    let byteFallback: Bool
    /// The token for characters that have neither a token nor byte tokens.
    let unknownID: Int32?
    /// Collapse consecutive unknown characters into one unknown token.
    let fuseUnknown: Bool
    /// Take a piece that is itself a token whole, without merging (Llama 3).
    let ignoreMerges: Bool
    /// Tokens merging must never produce (control tokens, in score order).
    let unmergeable: Set<Int32>

    /// A model; `byteTokenIDs` is derived from the vocabulary.
    init(vocabulary: Vocabulary, order: MergeOrder, byteFallback: Bool, unknownID: Int32?,
         fuseUnknown: Bool, ignoreMerges: Bool, unmergeable: Set<Int32> = []) {
        self.vocabulary = vocabulary
        self.order = order
        self.byteFallback = byteFallback
        self.unknownID = unknownID
        self.fuseUnknown = fuseUnknown
        self.ignoreMerges = ignoreMerges
        self.unmergeable = unmergeable
        byteTokenIDs = (0..<256).map { vocabulary.id(for: byteTokenName($0)) ?? -1 }
    }

    /// One symbol of a piece while it is merged: a token id (-1 for a character the
    /// vocabulary lacks, in score order), its span of scalars, and its neighbours.
    private struct Symbol {
        var id: Int32
        var start: Int32
        /// Scalars covered (byte symbols count 1 each); 0 once merged into its left neighbour.
        var length: Int32
        var previous: Int32
        var next: Int32
    }

    /// Appends the token ids of `piece` to `output`.
    func encode(_ piece: String, into output: inout [Int32]) {
        if ignoreMerges, let id = vocabulary.id(for: piece) {
            output.append(id)
            return
        }
        let scalars = Array(piece.unicodeScalars)
        var symbols = initialSymbols(scalars)
        merge(&symbols, scalars: scalars)
        var index = symbols.isEmpty ? -1 : 0
        while index >= 0 {
            let symbol = symbols[index]
            if symbol.id >= 0 {
                output.append(symbol.id)
            } else {
                appendBytes(of: scalars[Int(symbol.start)], to: &output)
            }
            index = Int(symbol.next)
        }
    }

    /// The symbols a piece starts as: one per scalar, or byte tokens and unknown tokens for
    /// scalars without a token (in rank order; score order resolves those at the end).
    private func initialSymbols(_ scalars: [Unicode.Scalar]) -> [Symbol] {
        var symbols: [Symbol] = []
        symbols.reserveCapacity(scalars.count)
        func add(_ id: Int32, at start: Int) {
            let index = Int32(symbols.count)
            symbols.append(Symbol(id: id, start: Int32(start), length: 1, previous: index - 1, next: index + 1))
        }
        var previousUnknown = false
        for (position, scalar) in scalars.enumerated() {
            if let id = vocabulary.id(for: scalar) {
                add(id, at: position)
                previousUnknown = false
                continue
            }
            if case .scores = order {
                add(-1, at: position)
                continue
            }
            if byteFallback {
                let ids = scalarBytes(scalar).map { byteTokenIDs[Int($0)] }
                if !ids.contains(-1) {
                    for id in ids { add(id, at: position) }
                    previousUnknown = false
                    continue
                }
            }
            guard let unknownID else { continue }
            if fuseUnknown, previousUnknown {
                symbols[symbols.count - 1].length += 1
            } else {
                add(unknownID, at: position)
            }
            previousUnknown = true
        }
        if !symbols.isEmpty { symbols[symbols.count - 1].next = -1 }
        return symbols
    }

    /// Merges neighbouring symbols, best candidate first, until no candidate is left.
    private func merge(_ symbols: inout [Symbol], scalars: [Unicode.Scalar]) {
        guard symbols.count > 1 else { return }
        var queue = MergeQueue()
        for left in 0..<(symbols.count - 1) {
            if let candidate = candidate(left, left + 1, symbols, scalars) { queue.push(candidate) }
        }
        while let top = queue.pop() {
            let left = Int(top.left), right = Int(top.right)
            guard symbols[left].length > 0, symbols[right].length > 0, symbols[left].next == top.right,
                  symbols[left].length + symbols[right].length == top.length else { continue }
            symbols[left].id = top.result
            symbols[left].length = top.length
            symbols[left].next = symbols[right].next
            symbols[right].length = 0
            let next = Int(symbols[left].next)
            if next >= 0 {
                symbols[next].previous = top.left
                if let candidate = candidate(left, next, symbols, scalars) { queue.push(candidate) }
            }
            let previous = Int(symbols[left].previous)
            if previous >= 0, let candidate = candidate(previous, left, symbols, scalars) {
                queue.push(candidate)
            }
        }
    }

    /// The merge of the symbols at `left` and `right`, when the model has one.
    private func candidate(_ left: Int, _ right: Int, _ symbols: [Symbol],
                           _ scalars: [Unicode.Scalar]) -> MergeCandidate? {
        let a = symbols[left], b = symbols[right]
        let length = a.length + b.length
        switch order {
        case let .ranks(merges):
            guard a.id >= 0, b.id >= 0, let merge = merges[MergeOrder.key(a.id, b.id)] else { return nil }
            return MergeCandidate(priority: Double(merge.rank), left: Int32(left), right: Int32(right),
                                  length: length, result: merge.result)
        case let .scores(scores):
            let span = Int(a.start)..<Int(a.start + length)
            let text = String(String.UnicodeScalarView(scalars[span]))
            guard let id = vocabulary.id(for: text), Int(id) < scores.count, !unmergeable.contains(id) else {
                return nil
            }
            return MergeCandidate(priority: -Double(scores[Int(id)]), left: Int32(left), right: Int32(right),
                                  length: length, result: id)
        }
    }

    /// Appends the byte tokens of a scalar that no token covers, or the unknown token.
    private func appendBytes(of scalar: Unicode.Scalar, to output: inout [Int32]) {
        let ids = scalarBytes(scalar).map { byteTokenIDs[Int($0)] }
        if byteFallback, !ids.contains(-1) {
            output.append(contentsOf: ids)
        } else if let unknownID {
            output.append(unknownID)
        }
    }
}

/// The UTF-8 bytes of one scalar.
func scalarBytes(_ scalar: Unicode.Scalar) -> [UInt8] {
    Array(String(scalar).utf8)
}

/// The name of the byte token for `byte`: `<0x0A>`.
func byteTokenName(_ byte: Int) -> String {
    let digits = Array("0123456789ABCDEF")
    return "<0x\(digits[byte >> 4])\(digits[byte & 15])>"
}
