// ChatSession: prompts in, replies out — template, tokenizer, stop tokens and generation together.
import FrugalCore
import FrugalFormats
import FrugalModels

/// Answers prompts with a decoder: renders the chat template, encodes, generates until an
/// end-of-turn token or stop string, and decodes.
public struct ChatSession {
    public let decoder: Decoder
    public let tokenizer: Tokenizer
    /// The chat format; nil continues raw text.
    public let template: ChatTemplate?
    /// The system message the template adds when none is given (SmolLM2's, for one).
    public let defaultSystemPrompt: String?
    /// Tokens that end a reply.
    public let stopTokens: Set<Int32>

    public init(decoder: Decoder, tokenizer: Tokenizer, template: ChatTemplate?, defaultSystemPrompt: String?,
                eosTokenIDs: [Int] = []) {
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.template = template
        self.defaultSystemPrompt = defaultSystemPrompt
        var stops = Set(eosTokenIDs.map(Int32.init))
        if let eos = tokenizer.eosID { stops.insert(eos) }
        for text in template?.stopStrings ?? [] { if let id = tokenizer.tokenID(for: text) { stops.insert(id) } }
        stopTokens = stops
    }

    /// The token ids of a prompt as the model sees it (template applied unless raw).
    public func encode(_ prompt: String, system: String? = nil) -> [Int32] {
        guard let template else { return tokenizer.encode(prompt, addSpecialTokens: true) }
        var messages = [ChatMessage]()
        if let system { messages.append(ChatMessage(role: "system", content: system)) }
        messages.append(ChatMessage(role: "user", content: prompt))
        let text = template.render(messages, addGenerationPrompt: true, defaultSystemPrompt: defaultSystemPrompt)
        return tokenizer.encode(text, addSpecialTokens: false)
    }

    /// Generates a reply to `prompt`, calling `onText` with each piece of text as it is decoded.
    /// - Returns: the whole reply and the timings.
    public func reply(to prompt: String, system: String? = nil, maxTokens: Int = 256,
                      sampling: SamplingOptions = SamplingOptions(),
                      onText: (String) -> Void = { _ in }) -> (text: String, statistics: GenerationStatistics) {
        let stopStrings = template?.stopStrings ?? []
        var stream = tokenizer.streamingDecoder(skipSpecial: true)
        var text = ""
        let options = GenerationOptions(maxTokens: maxTokens, sampling: sampling, stopTokens: stopTokens)
        let (_, statistics) = Generator(decoder: decoder).generate(prompt: encode(prompt, system: system), options: options) { token in
            let piece = stream.append(token)
            text += piece
            onText(piece)
            return !stopStrings.contains { text.hasSuffix($0) }
        }
        let rest = stream.finish()
        text += rest
        onText(rest)
        for stop in stopStrings where text.hasSuffix(stop) { text.removeLast(stop.count) }
        return (text, statistics)
    }
}
