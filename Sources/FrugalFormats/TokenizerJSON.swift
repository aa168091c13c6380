// TokenizerJSON: loads a Hugging Face tokenizer.json (BPE models) into a Tokenizer.

import Foundation
import FrugalCore

extension Tokenizer {
    /// Loads a Hugging Face `tokenizer.json` whose model is BPE: byte-level (GPT-2, Llama 3,
    /// Qwen 2, SmolLM) or SentencePiece-style with byte fallback (Llama 2, Phi-3, Gemma).
    ///
    /// BOS and EOS come from the arguments, else from a `tokenizer_config.json` beside the file,
    /// else from the post-processor's leading token and the usual token names.
    /// - Parameters:
    ///   - url: The tokenizer.json file.
    ///   - bosToken: The BOS token's text, when known.
    ///   - eosToken: The EOS token's text, when known.
    /// - Throws: `FrugalError.missingFile` when the file is absent, `FrugalError.malformedFile`
    ///   (naming the file and the key) when it is not valid JSON, uses a part Frugal does not
    ///   implement, or is inconsistent (a merge of tokens that are not in the vocabulary).
    public convenience init(tokenizerJSON url: URL, bosToken: String? = nil, eosToken: String? = nil) throws {
        let root = try TokenizerJSONReader.readJSON(url)
        let reader = TokenizerJSONReader(file: url.path)
        let addedTokens = try reader.addedTokens(root["added_tokens"])
        let model = try reader.model(root["model"])
        let (prefixIDs, suffixIDs) = try reader.postProcessor(root["post_processor"])

        var bosToken = bosToken, eosToken = eosToken
        let configURL = url.deletingLastPathComponent().appendingPathComponent("tokenizer_config.json")
        if FileManager.default.fileExists(atPath: configURL.path) {
            let config = try TokenizerJSONReader.readJSON(configURL)
            bosToken = try bosToken ?? TokenizerJSONReader.tokenText(config["bos_token"])
            eosToken = try eosToken ?? TokenizerJSONReader.tokenText(config["eos_token"])
        }
        func id(of text: String) -> Int32? {
            addedTokens.first { $0.content.utf8.elementsEqual(text.utf8) }?.id ?? model.vocabulary.id(for: text)
        }
        let bosID = bosToken.flatMap(id(of:))
            ?? prefixIDs.first
            ?? ["<s>", "<|begin_of_text|>", "<bos>"].lazy.compactMap(id(of:)).first
        let eosID = eosToken.flatMap(id(of:))
            ?? ["</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>"].lazy.compactMap(id(of:)).first

        self.init(model: model,
                  normalizers: try reader.normalizers(root["normalizer"]),
                  preTokenizers: try reader.preTokenizers(root["pre_tokenizer"]),
                  decoders: try reader.decoders(root["decoder"]),
                  addedTokens: addedTokens, prefixIDs: prefixIDs, suffixIDs: suffixIDs,
                  bosID: bosID, eosID: eosID)
    }
}

/// Reads the parts of a tokenizer.json; every error names the file and the key path.
struct TokenizerJSONReader {
    /// The file, for error messages.
    let file: String

    /// The largest token id accepted (vocabularies are far smaller).
    static let maximumTokenID = 1 << 24

    /// Reads and parses a JSON file.
    static func readJSON(_ url: URL) throws -> JSONNode {
        let bytes = try readFile(url)
        let value = try bytes.withUnsafeBytes { try JSONValue.parse($0, path: url.path, baseOffset: 0) }
        return JSONNode(value: value, file: url.path, path: "")
    }

    /// A token's text from tokenizer_config.json: a string, or an object with `content`.
    static func tokenText(_ node: JSONNode) throws -> String? {
        if case .object = node.value { return try node["content"].optionalString() }
        return try node.optionalString()
    }

    // MARK: - Model

    /// The BPE model: vocabulary, merges and the unknown-character policy.
    func model(_ node: JSONNode) throws -> BPEModel {
        guard !node.isNull else { throw node.error("missing") }
        let type = try node["type"].optionalString() ?? "BPE"
        guard type == "BPE" else {
            throw node["type"].error("unsupported tokenizer model '\(type)' (Frugal reads BPE)")
        }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let affix = try node[key].optionalString(), !affix.isEmpty {
                throw node[key].error("unsupported BPE option '\(affix)'")
            }
        }
        let vocabulary = try self.vocabulary(node["vocab"])
        let merges = try self.merges(node["merges"], vocabulary: vocabulary)
        var unknownID: Int32?
        if let unknown = try node["unk_token"].optionalString() {
            guard let id = vocabulary.id(for: unknown) else {
                throw node["unk_token"].error("'\(unknown)' is not in the vocabulary")
            }
            unknownID = id
        }
        return BPEModel(vocabulary: vocabulary, order: .ranks(merges),
                        byteFallback: try node["byte_fallback"].bool(default: false),
                        unknownID: unknownID,
                        fuseUnknown: try node["fuse_unk"].bool(default: false),
                        ignoreMerges: try node["ignore_merges"].bool(default: false))
    }

    /// `model.vocab`: token → id, ids dense enough to index an array.
    private func vocabulary(_ node: JSONNode) throws -> Vocabulary {
        guard case let .object(members) = node.value else { throw node.error("expected an object") }
        var entries: [(String, Int)] = []
        entries.reserveCapacity(members.count)
        var largest = -1
        for member in members {
            guard case let .integer(id) = member.value, (0...Self.maximumTokenID).contains(id) else {
                throw FrugalError.malformedFile(path: file, problem: "\(node.path): token '\(member.key)' has an invalid id",
                                                offset: member.offset)
            }
            entries.append((member.key, id))
            largest = max(largest, id)
        }
        guard largest < 2 * entries.count + 1024 else {
            throw node.error("token ids are sparse (largest \(largest) for \(entries.count) tokens)")
        }
        var tokens = [String?](repeating: nil, count: largest + 1)
        for (token, id) in entries {
            guard tokens[id] == nil else { throw node.error("id \(id) is used by two tokens") }
            tokens[id] = token
        }
        return Vocabulary(tokens: tokens)
    }

    /// `model.merges`, as "a b" strings or ["a", "b"] pairs, each ranked by its position.
    private func merges(_ node: JSONNode, vocabulary: Vocabulary) throws -> [UInt64: RankedMerge] {
        guard !node.isNull else { return [:] }
        var ranks: [UInt64: RankedMerge] = [:]
        for (rank, entry) in try node.array().enumerated() {
            let pair: (String, String)
            if case .array = entry.value {
                let parts = try entry.array()
                guard parts.count == 2 else { throw entry.error("expected two tokens") }
                pair = (try parts[0].string(), try parts[1].string())
            } else {
                guard let split = splitMerge(try entry.string()) else { throw entry.error("expected 'left right'") }
                pair = split
            }
            guard let left = vocabulary.id(for: pair.0), let right = vocabulary.id(for: pair.1),
                  let result = vocabulary.id(for: pair.0 + pair.1) else {
                throw entry.error("merge '\(pair.0) \(pair.1)' uses a token that is not in the vocabulary")
            }
            let key = MergeOrder.key(left, right)
            if ranks[key] == nil { ranks[key] = RankedMerge(rank: Int32(rank), result: result) }
        }
        return ranks
    }

    // MARK: - Added tokens and post-processor

    /// `added_tokens`.
    func addedTokens(_ node: JSONNode) throws -> [AddedToken] {
        guard !node.isNull else { return [] }
        return try node.array().map { entry in
            let content = try entry["content"].string()
            guard !content.isEmpty else { throw entry["content"].error("empty added token") }
            return AddedToken(id: Int32(try entry["id"].int(in: 0...Self.maximumTokenID)),
                              content: content,
                              isSpecial: try entry["special"].bool(default: false),
                              stripsLeft: try entry["lstrip"].bool(default: false),
                              stripsRight: try entry["rstrip"].bool(default: false),
                              singleWord: try entry["single_word"].bool(default: false),
                              isNormalized: try entry["normalized"].bool(default: true))
        }
    }

    /// The ids the post-processor puts before and after a single sequence.
    func postProcessor(_ node: JSONNode) throws -> (prefix: [Int32], suffix: [Int32]) {
        guard !node.isNull else { return ([], []) }
        let type = try node["type"].string()
        switch type {
        case "ByteLevel":
            return ([], [])
        case "Sequence":
            var prefix: [Int32] = [], suffix: [Int32] = []
            for processor in try node["processors"].array() {
                let (before, after) = try postProcessor(processor)
                prefix += before
                suffix = after + suffix
            }
            return (prefix, suffix)
        case "TemplateProcessing":
            var prefix: [Int32] = [], suffix: [Int32] = []
            var seenSequence = false
            for item in try node["single"].array() {
                if !item["Sequence"].isNull {
                    seenSequence = true
                    continue
                }
                let name = try item["SpecialToken"]["id"].string()
                let ids = try node["special_tokens"][name]["ids"].array().map {
                    Int32(try $0.int(in: 0...Self.maximumTokenID))
                }
                if seenSequence { suffix += ids } else { prefix += ids }
            }
            return (prefix, suffix)
        case "RobertaProcessing", "BertProcessing":
            let cls = try node["cls"].array(), sep = try node["sep"].array()
            guard cls.count == 2, sep.count == 2 else { throw node.error("expected [token, id] pairs") }
            return ([Int32(try cls[1].int(in: 0...Self.maximumTokenID))],
                    [Int32(try sep[1].int(in: 0...Self.maximumTokenID))])
        default:
            throw node["type"].error("unsupported post-processor '\(type)'")
        }
    }

    // MARK: - Normalizer, pre-tokenizer, decoder

    /// `normalizer`, flattened.
    func normalizers(_ node: JSONNode) throws -> [Normalizer] {
        guard !node.isNull else { return [] }
        let type = try node["type"].string()
        switch type {
        case "Sequence": return try node["normalizers"].array().flatMap(normalizers)
        case "Prepend": return [.prepend(try node["prepend"].string())]
        case "Replace": return [.replace(pattern: try literalPattern(node["pattern"]), content: try node["content"].string())]
        case "NFC": return [.nfc]
        case "NFD": return [.nfd]
        case "NFKC": return [.nfkc]
        case "NFKD": return [.nfkd]
        case "Lowercase": return [.lowercase]
        default: throw node["type"].error("unsupported normalizer '\(type)'")
        }
    }

    /// `pre_tokenizer`, flattened.
    func preTokenizers(_ node: JSONNode) throws -> [PreTokenizer] {
        guard !node.isNull else { return [] }
        let type = try node["type"].string()
        switch type {
        case "Sequence":
            return try node["pretokenizers"].array().flatMap(preTokenizers)
        case "ByteLevel":
            return [.byteLevel(addPrefixSpace: try node["add_prefix_space"].bool(default: true),
                               useRegex: try node["use_regex"].bool(default: true))]
        case "Split":
            let behavior = try node["behavior"].string()
            guard behavior == "Isolated", try !node["invert"].bool(default: false) else {
                throw node["behavior"].error("unsupported split behavior '\(behavior)'")
            }
            let regex = try node["pattern"]["Regex"].string()
            guard let pattern = SplitPattern(regex: regex) else {
                throw node["pattern"].error("unsupported pre-tokenizer regex \(regex)")
            }
            return [.split(pattern)]
        case "Digits":
            return [.digits(individually: try node["individual_digits"].bool(default: false))]
        case "Metaspace":
            return [.metaspace(replacement: try scalar(node["replacement"]), prependScheme: try prependScheme(node),
                               split: try node["split"].bool(default: true))]
        default:
            throw node["type"].error("unsupported pre-tokenizer '\(type)'")
        }
    }

    /// `decoder`, flattened.
    func decoders(_ node: JSONNode) throws -> [TokenDecoder] {
        guard !node.isNull else { return [] }
        let type = try node["type"].string()
        switch type {
        case "Sequence": return try node["decoders"].array().flatMap(decoders)
        case "ByteLevel": return [.byteLevel]
        case "Replace": return [.replace(pattern: try literalPattern(node["pattern"]), content: try node["content"].string())]
        case "ByteFallback": return [.byteFallback]
        case "Fuse": return [.fuse]
        case "Strip":
            return [.strip(content: try scalar(node["content"]), start: try node["start"].int(in: 0...Int(Int32.max)),
                           stop: try node["stop"].int(in: 0...Int(Int32.max)))]
        case "Metaspace":
            return [.metaspace(replacement: try scalar(node["replacement"]), prependScheme: try prependScheme(node))]
        default:
            throw node["type"].error("unsupported decoder '\(type)'")
        }
    }

    // MARK: - Helpers

    /// A `{"String": ...}` pattern (regular-expression patterns are not supported here).
    private func literalPattern(_ node: JSONNode) throws -> String {
        guard let literal = try node["String"].optionalString() else {
            throw node.error("unsupported pattern (Frugal reads {\"String\": ...} patterns)")
        }
        return literal
    }

    /// A string that holds exactly one scalar.
    private func scalar(_ node: JSONNode) throws -> Unicode.Scalar {
        let text = try node.string()
        guard text.unicodeScalars.count == 1, let scalar = text.unicodeScalars.first else {
            throw node.error("expected one character")
        }
        return scalar
    }

    /// Metaspace's `prepend_scheme`, or the older `add_prefix_space` flag.
    private func prependScheme(_ node: JSONNode) throws -> PrependScheme {
        if let name = try node["prepend_scheme"].optionalString() {
            guard let scheme = PrependScheme(rawValue: name) else {
                throw node["prepend_scheme"].error("unknown prepend scheme '\(name)'")
            }
            return scheme
        }
        return try node["add_prefix_space"].bool(default: true) ? .always : .never
    }
}

/// A merge-list entry "left right" cut at its first space after the first character (as
/// llama.cpp does, so a token may begin with a space); nil when there is none.
func splitMerge(_ merge: String) -> (String, String)? {
    let scalars = Array(merge.unicodeScalars)
    guard scalars.count >= 3, let space = scalars.dropFirst().firstIndex(of: " ") else { return nil }
    return (String(String.UnicodeScalarView(scalars[..<space])),
            String(String.UnicodeScalarView(scalars[(space + 1)...])))
}
