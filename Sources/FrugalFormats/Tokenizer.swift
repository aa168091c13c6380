// Tokenizer: text to token ids and back, for byte-level BPE and SentencePiece-style BPE.

/// A BPE tokenizer, as Hugging Face `tokenizers` runs one: added tokens are found in the text
/// first, the text between them is normalized, pre-tokenized into pieces and merged piece by
/// piece; a post-processor may add tokens such as BOS around the result. Decoding runs the
/// decoder steps over the token strings.
///
/// Two families are covered: byte-level BPE (GPT-2, Llama 3, Qwen 2, SmolLM) and
/// SentencePiece-style BPE with byte fallback (Llama 2, Phi-3, Gemma). Load one with
/// `init(tokenizerJSON:)` or `init(ggufModel:pre:tokens:merges:...)`.
public final class Tokenizer: Sendable {
    /// The beginning-of-sequence token, when the model has one.
    public let bosID: Int32?
    /// The end-of-sequence token, when the model has one.
    public let eosID: Int32?
    /// The tokens found verbatim in the input (special tokens among them).
    public let addedTokens: [AddedToken]
    /// One more than the largest token id: the rows an embedding table needs.
    public let vocabularySize: Int

    let model: BPEModel
    let normalizers: [Normalizer]
    let preTokenizers: [PreTokenizer]
    let decoders: [TokenDecoder]
    /// Ids the post-processor puts before the text's tokens (BOS) when special tokens are added.
    let prefixIDs: [Int32]
    /// Ids the post-processor puts after the text's tokens.
    let suffixIDs: [Int32]
    private let rawMatcher: AddedTokenMatcher
    private let normalizedMatcher: AddedTokenMatcher
    private let addedByID: [Int32: AddedToken]
    private let addedByContent: [TokenKey: Int32]

    /// A tokenizer from its stages; the loaders check their input before they call this.
    init(model: BPEModel, normalizers: [Normalizer], preTokenizers: [PreTokenizer], decoders: [TokenDecoder],
         addedTokens: [AddedToken], prefixIDs: [Int32], suffixIDs: [Int32], bosID: Int32?, eosID: Int32?) {
        self.model = model
        self.normalizers = normalizers
        self.preTokenizers = preTokenizers
        self.decoders = decoders
        self.addedTokens = addedTokens
        self.prefixIDs = prefixIDs
        self.suffixIDs = suffixIDs
        self.bosID = bosID
        self.eosID = eosID
        rawMatcher = AddedTokenMatcher(tokens: addedTokens.filter { !$0.isNormalized })
        normalizedMatcher = AddedTokenMatcher(tokens: addedTokens.filter(\.isNormalized)) { token in
            normalizers.reduce(token.content) { $1.apply($0) }
        }
        var byID: [Int32: AddedToken] = [:]
        var byContent: [TokenKey: Int32] = [:]
        for token in addedTokens {
            byID[token.id] = token
            byContent[TokenKey(text: token.content)] = token.id
        }
        addedByID = byID
        addedByContent = byContent
        vocabularySize = max(model.vocabulary.count, Int(addedTokens.map(\.id).max() ?? -1) + 1)
    }

    // MARK: - Encoding

    /// The token ids of `text`.
    /// - Parameters:
    ///   - text: The text to encode.
    ///   - addSpecialTokens: Add the tokens the post-processor puts around a sequence (BOS for
    ///     Llama-style tokenizers). Chat-template output already spells them: pass `false` there.
    ///   - parseSpecialTokens: Turn special-token text such as `<|im_start|>` into its id. Pass
    ///     `false` for untrusted text, so that it is spelled with ordinary tokens instead.
    /// - Returns: The ids, in order.
    public func encode(_ text: String, addSpecialTokens: Bool = true, parseSpecialTokens: Bool = true) -> [Int32] {
        var ids: [Int32] = addSpecialTokens ? prefixIDs : []
        for segment in rawMatcher.split(text, startsInput: true, includeSpecial: parseSpecialTokens) {
            switch segment {
            case let .token(id):
                ids.append(id)
            case let .text(part, startsInput):
                let normalized = normalizers.reduce(part) { $1.apply($0) }
                for inner in normalizedMatcher.split(normalized, startsInput: startsInput,
                                                     includeSpecial: parseSpecialTokens) {
                    switch inner {
                    case let .token(id): ids.append(id)
                    case let .text(piece, startsInput): encodePieces(of: piece, startsInput: startsInput, into: &ids)
                    }
                }
            }
        }
        if addSpecialTokens { ids.append(contentsOf: suffixIDs) }
        return ids
    }

    /// Pre-tokenizes normalized text and appends the BPE tokens of every piece.
    private func encodePieces(of text: String, startsInput: Bool, into ids: inout [Int32]) {
        var pieces = [TextPiece(text: text, startsInput: startsInput)]
        for step in preTokenizers {
            pieces = pieces.flatMap(step.apply)
        }
        for piece in pieces {
            model.encode(piece.text, into: &ids)
        }
    }

    // MARK: - Decoding

    /// The text of `ids`.
    /// - Parameters:
    ///   - ids: Token ids; ids outside the vocabulary are left out.
    ///   - skipSpecial: Leave special tokens out of the text.
    /// - Returns: The text; bytes that do not form valid UTF-8 become U+FFFD.
    public func decode(_ ids: [Int32], skipSpecial: Bool = false) -> String {
        var tokens: [String] = []
        tokens.reserveCapacity(ids.count)
        for id in ids {
            if let added = addedByID[id] {
                if !(skipSpecial && added.isSpecial) { tokens.append(added.content) }
            } else if let token = model.vocabulary.token(for: id) {
                tokens.append(token)
            }
        }
        return TokenDecoder.decode(tokens, steps: decoders)
    }

    /// A decoder that turns ids into text one at a time, as they are generated.
    public func streamingDecoder(skipSpecial: Bool = false) -> StreamingDecoder {
        StreamingDecoder(tokenizer: self, skipSpecial: skipSpecial)
    }

    // MARK: - Vocabulary

    /// The id of a token string (an added token's content or a vocabulary entry), or nil.
    public func tokenID(for token: String) -> Int32? {
        addedByContent[TokenKey(text: token)] ?? model.vocabulary.id(for: token)
    }

    /// The string of a token id as the vocabulary spells it (byte-level tokens in their
    /// `Ġ` spelling), or nil when the id is unknown.
    public func token(for id: Int32) -> String? {
        addedByID[id]?.content ?? model.vocabulary.token(for: id)
    }

    /// Whether `id` is a special token (skipped by `decode(_:skipSpecial:)`).
    public func isSpecial(_ id: Int32) -> Bool {
        addedByID[id]?.isSpecial ?? false
    }

    /// The special tokens, content to id.
    public var specialTokens: [String: Int32] {
        var result: [String: Int32] = [:]
        for token in addedTokens where token.isSpecial { result[token.content] = token.id }
        return result
    }
}
