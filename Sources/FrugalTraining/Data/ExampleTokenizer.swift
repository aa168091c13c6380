// ExampleTokenizer: training examples to token sequences whose targets train only the
// assistant's replies (conversations) or every token (plain text).
import FrugalCore
import FrugalFormats

/// Turns training examples into `TokenizedExample`s for one model.
///
/// A conversation is rendered with the model's chat template
/// (`ChatTemplate.renderWithAssistantRanges`) and encoded piece by piece: the text before the
/// first assistant reply, the reply (through its end-of-turn marker), the text up to the next
/// reply, and so on. Only tokens of the replies are targets, unless `trainOnPrompt`. Encoding
/// the pieces apart, as most trainers do, may split a few tokens differently from encoding the
/// whole text at once where a piece ends, but it keeps every token wholly inside or outside
/// a reply. Special-token text in the rendering (`<|im_start|>`) becomes its id.
///
/// Plain text is encoded with the tokenizer's special tokens (BOS where the model uses one)
/// and an EOS after it, and every token is a target.
public struct ExampleTokenizer: Sendable {
    /// The model's tokenizer.
    public let tokenizer: Tokenizer
    /// The model's chat template; conversations need one.
    public let template: ChatTemplate?
    /// The system prompt the template writes when a conversation has none
    /// (`ChatTemplate.defaultSystemPrompt(in:)`), or nil.
    public let defaultSystemPrompt: String?
    /// The most tokens of a sequence: a longer conversation is truncated, a longer text is cut
    /// into pieces of this length. Nil for no limit.
    public let maxLength: Int?
    /// Train on the prompt's tokens too, not only the assistant's replies.
    public let trainOnPrompt: Bool

    /// A tokenizer of examples.
    /// - Parameters: as the properties of the same names.
    public init(tokenizer: Tokenizer, template: ChatTemplate?, defaultSystemPrompt: String? = nil,
                maxLength: Int? = nil, trainOnPrompt: Bool = false) {
        self.tokenizer = tokenizer
        self.template = template
        self.defaultSystemPrompt = defaultSystemPrompt
        self.maxLength = maxLength
        self.trainOnPrompt = trainOnPrompt
    }

    /// The sequences of one example: one for a conversation, one or more for a text longer
    /// than `maxLength`.
    /// - Throws: `FrugalError.invalidArgument` for a conversation when there is no template.
    public func tokenize(_ example: TrainingExample) throws -> [TokenizedExample] {
        switch example.content {
        case let .chat(messages):
            let sequence = try chatSequence(messages)
            guard let maxLength, sequence.tokens.count > maxLength else { return [sequence] }
            return [TokenizedExample(tokens: Array(sequence.tokens.prefix(maxLength)),
                                     targets: Array(sequence.targets.prefix(maxLength)))]
        case let .text(text):
            var tokens = tokenizer.encode(text, addSpecialTokens: true)
            if let eos = tokenizer.eosID, tokens.last != eos { tokens.append(eos) }
            let sequence = TokenizedExample(tokens: tokens, trained: Array(repeating: true, count: tokens.count))
            guard let maxLength else { return [sequence] }
            return sequence.pieces(ofLength: maxLength)
        }
    }

    /// The sequences of many examples, in order.
    public func tokenize(_ examples: [TrainingExample]) throws -> [TokenizedExample] {
        try examples.flatMap { try tokenize($0) }
    }

    private func chatSequence(_ messages: [ChatMessage]) throws -> TokenizedExample {
        guard let template else {
            throw FrugalError.invalidArgument("conversations need a chat template, and the model has none")
        }
        let rendered = template.renderWithAssistantRanges(messages, addGenerationPrompt: false,
                                                          defaultSystemPrompt: defaultSystemPrompt)
        let bytes = Array(rendered.text.utf8)
        var tokens: [Int32] = []
        var trained: [Bool] = []
        func append(_ range: Range<Int>, isReply: Bool) {
            guard !range.isEmpty else { return }
            let piece = tokenizer.encode(String(decoding: bytes[range], as: UTF8.self), addSpecialTokens: false)
            tokens += piece
            trained += repeatElement(isReply || trainOnPrompt, count: piece.count)
        }
        var start = 0
        for reply in rendered.assistantRanges {
            append(start..<reply.lowerBound, isReply: false)
            append(reply, isReply: true)
            start = reply.upperBound
        }
        append(start..<bytes.count, isReply: false)
        return TokenizedExample(tokens: tokens, trained: trained)
    }
}
