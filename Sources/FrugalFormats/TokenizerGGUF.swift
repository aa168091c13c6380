// TokenizerGGUF: builds a Tokenizer from the tokenizer arrays of a GGUF file's metadata.

import FrugalCore

/// GGUF's `tokenizer.ggml.token_type` values.
enum GGUFTokenType: Int32 {
    case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
}

extension Tokenizer {
    /// A tokenizer from GGUF metadata (`tokenizer.ggml.*`), as llama.cpp reads it.
    ///
    /// - `"gpt2"`: byte-level BPE with ranked merges; `pre` picks the split pattern: "smollm",
    ///   "starcoder", "refact" (digits alone, then GPT-2); "llama-bpe", "llama3", "smaug-bpe"
    ///   (Llama 3, whole-word tokens taken before merging); "qwen2", "deepseek-r1-qwen" (Qwen 2);
    ///   "default", "gpt2", "gpt-2" or nil (GPT-2).
    /// - `"llama"`: SentencePiece-style BPE: spaces become "▁" (one is prepended when
    ///   `addSpacePrefix`), characters without a token fall back to `<0xXX>` byte tokens;
    ///   merges by rank when the file has merges, else by the merged token's score.
    ///
    /// Control tokens (type 3) are special added tokens and user-defined ones (type 4) ordinary
    /// added tokens: both are found in the text before BPE.
    /// - Parameters:
    ///   - ggufModel: `tokenizer.ggml.model`: "gpt2" or "llama".
    ///   - pre: `tokenizer.ggml.pre`.
    ///   - tokens: `tokenizer.ggml.tokens`, indexed by id.
    ///   - merges: `tokenizer.ggml.merges` ("left right"), empty when absent.
    ///   - scores: `tokenizer.ggml.scores`.
    ///   - tokenTypes: `tokenizer.ggml.token_type`.
    ///   - bosID: `tokenizer.ggml.bos_token_id`.
    ///   - eosID: `tokenizer.ggml.eos_token_id`.
    ///   - addBOS: `tokenizer.ggml.add_bos_token`: `encode(_:addSpecialTokens:)` puts BOS first.
    ///   - addSpacePrefix: `tokenizer.ggml.add_space_prefix`; nil means true for "llama".
    ///   - source: The file, for error messages.
    /// - Throws: `FrugalError.malformedFile` naming `source` when the arrays disagree, an id is
    ///   out of range, a merge names an unknown token, or the model or pre-type is unsupported.
    public convenience init(ggufModel: String, pre: String?, tokens: [String], merges: [String], scores: [Float]?,
                            tokenTypes: [Int32]?, bosID: Int32?, eosID: Int32?, addBOS: Bool,
                            addSpacePrefix: Bool? = nil, source: String = "GGUF") throws {
        func fail(_ problem: String) -> FrugalError { .malformedFile(path: source, problem: problem) }
        guard !tokens.isEmpty, tokens.count <= TokenizerJSONReader.maximumTokenID else {
            throw fail("tokenizer.ggml.tokens has \(tokens.count) tokens")
        }
        if let scores, scores.count != tokens.count {
            throw fail("tokenizer.ggml.scores has \(scores.count) entries for \(tokens.count) tokens")
        }
        if let tokenTypes, tokenTypes.count != tokens.count {
            throw fail("tokenizer.ggml.token_type has \(tokenTypes.count) entries for \(tokens.count) tokens")
        }
        for (key, id) in [("bos_token_id", bosID), ("eos_token_id", eosID)] {
            if let id, id < 0 || Int(id) >= tokens.count {
                throw fail("tokenizer.ggml.\(key) \(id) is outside the \(tokens.count) tokens")
            }
        }
        let types = tokenTypes ?? []
        func type(_ id: Int) -> GGUFTokenType? { id < types.count ? GGUFTokenType(rawValue: types[id]) : nil }

        var addedTokens: [AddedToken] = []
        for (id, token) in tokens.enumerated() where !token.isEmpty {
            switch type(id) {
            case .control: addedTokens.append(AddedToken(id: Int32(id), content: token, isSpecial: true))
            case .userDefined: addedTokens.append(AddedToken(id: Int32(id), content: token, isSpecial: false))
            default: break
            }
        }
        let vocabulary = Vocabulary(tokens: tokens)
        var order: MergeOrder
        if merges.isEmpty {
            guard ggufModel == "llama", let scores else {
                throw fail("tokenizer.ggml.merges is missing (a \(ggufModel) tokenizer needs it)")
            }
            order = .scores(scores)
        } else {
            order = .ranks(try Self.rankedMerges(merges, vocabulary: vocabulary, fail: fail))
        }
        let prefixIDs = addBOS ? bosID.map { [$0] } ?? [] : []

        switch ggufModel {
        case "gpt2":
            let (preTokenizers, ignoreMerges) = try Self.byteLevelPreTokenizers(pre, fail: fail)
            let model = BPEModel(vocabulary: vocabulary, order: order, byteFallback: false, unknownID: nil,
                                 fuseUnknown: false, ignoreMerges: ignoreMerges)
            self.init(model: model, normalizers: [], preTokenizers: preTokenizers, decoders: [.byteLevel],
                      addedTokens: addedTokens, prefixIDs: prefixIDs, suffixIDs: [], bosID: bosID, eosID: eosID)
        case "llama":
            let spacePrefix = addSpacePrefix ?? true
            let unknownID = types.firstIndex(of: GGUFTokenType.unknown.rawValue).map(Int32.init)
                ?? vocabulary.id(for: "<unk>")
            // As in SentencePiece, merging produces only normal tokens (not control, byte, unknown
            // or unused ones; user-defined ones are found before merging).
            let unmergeable = Set(types.indices.filter { type($0) != .normal }.map(Int32.init))
            let model = BPEModel(vocabulary: vocabulary, order: order, byteFallback: true, unknownID: unknownID,
                                 fuseUnknown: false, ignoreMerges: false, unmergeable: unmergeable)
            let spaces: [Normalizer] = [.replace(pattern: " ", content: "▁")]
            let decoders: [TokenDecoder] = [.replace(pattern: "▁", content: " "), .byteFallback, .fuse]
            self.init(model: model, normalizers: spacePrefix ? [.prepend("▁")] + spaces : spaces, preTokenizers: [],
                      decoders: spacePrefix ? decoders + [.strip(content: " ", start: 1, stop: 0)] : decoders,
                      addedTokens: addedTokens, prefixIDs: prefixIDs, suffixIDs: [], bosID: bosID, eosID: eosID)
        default:
            throw fail("unsupported tokenizer.ggml.model '\(ggufModel)' (Frugal reads gpt2 and llama)")
        }
    }

    /// The tokenizer stored in a GGUF file's `tokenizer.ggml.*` metadata (see
    /// `init(ggufModel:pre:tokens:...)`); without `add_bos_token`, BOS is added for "llama"
    /// tokenizers only, as llama.cpp does.
    /// - Throws: `FrugalError.malformedFile` naming the file when a key is missing or of the
    ///   wrong type, or when `init(ggufModel:pre:tokens:...)` rejects the values.
    public convenience init(gguf: GGUFFile) throws {
        func fail(_ key: String, _ problem: String) -> FrugalError {
            .malformedFile(path: gguf.path, problem: "tokenizer.ggml.\(key) \(problem)")
        }
        func value<T>(_ key: String, _ convert: (GGUFValue) -> T?) throws -> T? {
            guard let stored = gguf["tokenizer.ggml.\(key)"] else { return nil }
            guard let converted = convert(stored) else { throw fail(key, "has the wrong type") }
            return converted
        }
        func tokenID(_ key: String) throws -> Int32? {
            try value(key) { $0.int.flatMap(Int32.init(exactly:)) }
        }
        guard let model = try value("model", \.string) else { throw fail("model", "is missing") }
        guard let tokens = try value("tokens", \.stringArray) else { throw fail("tokens", "is missing") }
        let types = try value("token_type") { stored -> [Int32]? in
            guard let values = stored.intArray else { return nil }
            var types: [Int32] = []
            types.reserveCapacity(values.count)
            for value in values {
                guard let type = Int32(exactly: value) else { return nil }
                types.append(type)
            }
            return types
        }
        try self.init(ggufModel: model, pre: try value("pre", \.string), tokens: tokens,
                      merges: try value("merges", \.stringArray) ?? [], scores: try value("scores", \.floatArray),
                      tokenTypes: types, bosID: try tokenID("bos_token_id"), eosID: try tokenID("eos_token_id"),
                      addBOS: try value("add_bos_token", \.bool) ?? (model == "llama"),
                      addSpacePrefix: try value("add_space_prefix", \.bool), source: gguf.path)
    }

    /// GGUF merges ("left right"), ranked by position.
    private static func rankedMerges(_ merges: [String], vocabulary: Vocabulary,
                                     fail: (String) -> FrugalError) throws -> [UInt64: RankedMerge] {
        var ranks: [UInt64: RankedMerge] = [:]
        ranks.reserveCapacity(merges.count)
        for (rank, merge) in merges.enumerated() {
            guard let (left, right) = splitMerge(merge) else {
                throw fail("tokenizer.ggml.merges[\(rank)] '\(merge)' is not 'left right'")
            }
            guard let leftID = vocabulary.id(for: left), let rightID = vocabulary.id(for: right),
                  let result = vocabulary.id(for: left + right) else {
                throw fail("tokenizer.ggml.merges[\(rank)] '\(merge)' uses a token that is not in the vocabulary")
            }
            let key = MergeOrder.key(leftID, rightID)
            if ranks[key] == nil { ranks[key] = RankedMerge(rank: Int32(rank), result: result) }
        }
        return ranks
    }

    /// The pre-tokenizer of a byte-level GGUF `pre` type, and whether whole-word tokens are
    /// taken before merging.
    private static func byteLevelPreTokenizers(_ pre: String?,
                                               fail: (String) -> FrugalError) throws -> ([PreTokenizer], Bool) {
        let byteLevel = PreTokenizer.byteLevel(addPrefixSpace: false, useRegex: false)
        switch pre ?? "default" {
        case "default", "gpt2", "gpt-2":
            return ([.byteLevel(addPrefixSpace: false, useRegex: true)], false)
        case "smollm", "starcoder", "refact":
            return ([.digits(individually: true), .byteLevel(addPrefixSpace: false, useRegex: true)], false)
        case "llama-bpe", "llama3", "smaug-bpe":
            return ([.split(.llama3), byteLevel], true)
        case "qwen2", "deepseek-r1-qwen":
            return ([.split(.qwen2), byteLevel], false)
        case let other:
            throw fail("unsupported tokenizer.ggml.pre '\(other)'")
        }
    }
}
