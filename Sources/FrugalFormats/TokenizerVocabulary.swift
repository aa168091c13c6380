// TokenizerVocabulary: the two-way map between token strings and token ids.

/// A token string that compares and hashes by its exact UTF-8 bytes. Swift's `String`
/// equality follows canonical equivalence ("é" equals "e\u{301}"), which a vocabulary must not.
struct TokenKey: Hashable, Sendable {
    /// The token string.
    let text: String

    static func == (lhs: TokenKey, rhs: TokenKey) -> Bool {
        lhs.text.utf8.elementsEqual(rhs.text.utf8)
    }

    func hash(into hasher: inout Hasher) {
        let hashed: Void? = text.utf8.withContiguousStorageIfAvailable { bytes in
            hasher.combine(bytes: UnsafeRawBufferPointer(bytes))
        }
        if hashed == nil {
            for byte in text.utf8 { hasher.combine(byte) }
        }
    }
}

/// The model's tokens: id → string and string → id.
struct Vocabulary: Sendable {
    /// The string of each id; nil for an id no token uses.
    let tokens: [String?]
    private let ids: [TokenKey: Int32]
    /// The ids of the one-scalar tokens, by scalar: BPE looks each character up.
    private let scalarIDs: [UInt32: Int32]

    /// A vocabulary from the string of each id. When two ids share a string, the later id is
    /// the one `id(for:)` finds (llama.cpp's rule for GGUF token lists).
    init(tokens: [String?]) {
        self.tokens = tokens
        var ids: [TokenKey: Int32] = [:]
        var scalarIDs: [UInt32: Int32] = [:]
        ids.reserveCapacity(tokens.count)
        for (id, token) in tokens.enumerated() {
            guard let token else { continue }
            ids[TokenKey(text: token)] = Int32(id)
            var scalars = token.unicodeScalars.makeIterator()
            if let scalar = scalars.next(), scalars.next() == nil { scalarIDs[scalar.value] = Int32(id) }
        }
        self.ids = ids
        self.scalarIDs = scalarIDs
    }

    /// The number of ids (one more than the largest).
    var count: Int { tokens.count }

    /// The id of a token string, or nil.
    func id(for token: String) -> Int32? {
        ids[TokenKey(text: token)]
    }

    /// The id of the token made of the one scalar `scalar`, or nil.
    func id(for scalar: Unicode.Scalar) -> Int32? {
        scalarIDs[scalar.value]
    }

    /// The string of an id, or nil when the id is out of range or unused.
    func token(for id: Int32) -> String? {
        guard id >= 0, Int(id) < tokens.count else { return nil }
        return tokens[Int(id)]
    }
}
