// ChatTemplate: the chat formats of the common model families, rendered without Jinja.

import Foundation

/// One message of a conversation.
public struct ChatMessage: Codable, Sendable, Equatable {
    /// Who speaks: "system", "user" or "assistant".
    public var role: String
    /// What is said.
    public var content: String

    /// A message.
    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// A rendered conversation, and where the assistant's replies are in it.
public struct RenderedChat: Sendable, Equatable {
    /// The text, as `transformers`' `apply_chat_template` writes it.
    public let text: String
    /// The UTF-8 byte range in `text` of each assistant reply, from its first character
    /// through the end-of-turn marker that closes it: the text a fine-tuned model learns to
    /// produce (training masks the loss of everything else).
    public let assistantRanges: [Range<Int>]
}

/// The chat format of a model family, rendered as that family's official Jinja template does.
///
/// Render output goes to `Tokenizer.encode(_:addSpecialTokens:)` with `addSpecialTokens: false`:
/// templates that start with BOS write it themselves.
public enum ChatTemplate: String, Sendable, Codable, CaseIterable {
    /// `<|im_start|>role\n…<|im_end|>\n` (SmolLM, Qwen 2).
    case chatML
    /// `<|start_header_id|>role<|end_header_id|>\n\n…<|eot_id|>` (Llama 3).
    case llama3
    /// `<s>[INST] <<SYS>>\n…\n<</SYS>>\n\n… [/INST] … </s>` (Llama 2).
    case llama2
    /// `<|role|>\n…<|end|>\n` (Phi-3).
    case phi3
    /// `<start_of_turn>user\n…<end_of_turn>\n`, the assistant called "model"; a system
    /// message opens the first user turn, as in Gemma 3 (Gemma).
    case gemma

    // MARK: - Detection

    /// The family of a Jinja chat template (`tokenizer.chat_template`), recognized by the
    /// markers it writes; failing that, by the model architecture (`general.architecture`).
    /// - Returns: nil when neither tells.
    public static func detect(from templateSource: String?, architecture: String?) -> ChatTemplate? {
        if let source = templateSource {
            if source.contains("<|im_start|>") { return .chatML }
            if source.contains("<|start_header_id|>") { return .llama3 }
            if source.contains("<start_of_turn>") { return .gemma }
            if source.contains("<|end|>"), source.contains("<|user|>") || source.contains("<|assistant|>") {
                return .phi3
            }
            if source.contains("[INST]") { return .llama2 }
        }
        switch architecture?.lowercased() {
        case "gemma", "gemma2", "gemma3": return .gemma
        case "phi3": return .phi3
        case "qwen2": return .chatML
        default: return nil
        }
    }

    /// The system prompt a ChatML template writes when the conversation has none (SmolLM2's
    /// "You are a helpful AI assistant named SmolLM, trained by Hugging Face"), or nil.
    public static func defaultSystemPrompt(in templateSource: String?) -> String? {
        guard let source = templateSource else { return nil }
        for opening in ["<|im_start|>system\n", "<|im_start|>system\\n"] {
            var searchStart = source.startIndex
            while let open = source.range(of: opening, range: searchStart..<source.endIndex) {
                searchStart = open.upperBound
                guard let close = source.range(of: "<|im_end|>", range: open.upperBound..<source.endIndex) else { break }
                let prompt = source[open.upperBound..<close.lowerBound]
                // A literal inside the template, not an expression such as `' + message['content'] + '`.
                if !prompt.isEmpty, !prompt.contains(where: { "'\"{}+\\".contains($0) }) { return String(prompt) }
            }
        }
        return nil
    }

    /// The strings that end the assistant's turn: generation stops at any of them.
    public var stopStrings: [String] {
        switch self {
        case .chatML: ["<|im_end|>"]
        case .llama3: ["<|eot_id|>", "<|end_of_text|>"]
        case .llama2: ["</s>"]
        case .phi3: ["<|end|>", "<|endoftext|>"]
        case .gemma: ["<end_of_turn>", "<eos>"]
        }
    }

    // MARK: - Rendering

    /// The conversation as the family's template writes it.
    /// - Parameters:
    ///   - messages: The conversation.
    ///   - addGenerationPrompt: End with the header of an assistant turn, for generation.
    ///   - defaultSystemPrompt: A system message to put first when the conversation has none
    ///     (see `defaultSystemPrompt(in:)`).
    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool, defaultSystemPrompt: String? = nil) -> String {
        renderWithAssistantRanges(messages, addGenerationPrompt: addGenerationPrompt,
                                  defaultSystemPrompt: defaultSystemPrompt).text
    }

    /// The conversation as the family's template writes it, with the byte ranges of the
    /// assistant's replies (for loss masking). Parameters as in `render`.
    public func renderWithAssistantRanges(_ messages: [ChatMessage], addGenerationPrompt: Bool,
                                          defaultSystemPrompt: String? = nil) -> RenderedChat {
        var messages = messages
        if let defaultSystemPrompt, let first = messages.first, first.role != "system" {
            messages.insert(ChatMessage(role: "system", content: defaultSystemPrompt), at: 0)
        }
        var writer = ChatWriter()
        switch self {
        case .chatML: Self.writeChatML(messages, addGenerationPrompt, &writer)
        case .llama3: Self.writeLlama3(messages, addGenerationPrompt, &writer)
        case .llama2: Self.writeLlama2(messages, &writer)
        case .phi3: Self.writePhi3(messages, addGenerationPrompt, &writer)
        case .gemma: Self.writeGemma(messages, addGenerationPrompt, &writer)
        }
        return RenderedChat(text: writer.text, assistantRanges: writer.ranges)
    }

    private static func writeChatML(_ messages: [ChatMessage], _ generation: Bool, _ writer: inout ChatWriter) {
        for message in messages {
            writer.write("<|im_start|>\(message.role)\n")
            writer.writeTurn(message, end: "<|im_end|>")
            writer.write("\n")
        }
        if generation { writer.write("<|im_start|>assistant\n") }
    }

    private static func writeLlama3(_ messages: [ChatMessage], _ generation: Bool, _ writer: inout ChatWriter) {
        for (index, message) in messages.enumerated() {
            if index == 0 { writer.write("<|begin_of_text|>") }
            writer.write("<|start_header_id|>\(message.role)<|end_header_id|>\n\n")
            writer.writeTurn(ChatMessage(role: message.role, content: pythonStrip(message.content)), end: "<|eot_id|>")
        }
        if generation { writer.write("<|start_header_id|>assistant<|end_header_id|>\n\n") }
    }

    /// Llama 2 has no generation prompt: a conversation that ends with a user turn ends with `[/INST]`.
    private static func writeLlama2(_ messages: [ChatMessage], _ writer: inout ChatWriter) {
        var turns = messages[...]
        var system: String?
        if let first = turns.first, first.role == "system" {
            system = first.content
            turns = turns.dropFirst()
        }
        for (index, message) in turns.enumerated() {
            var content = message.content
            if index == 0, let system { content = "<<SYS>>\n\(system)\n<</SYS>>\n\n" + content }
            switch message.role {
            case "user":
                writer.write("<s>[INST] \(pythonStrip(content)) [/INST]")
            case "assistant":
                writer.write(" ")
                writer.writeTurn(ChatMessage(role: "assistant", content: pythonStrip(content)), end: " </s>")
            default:
                break
            }
        }
    }

    private static func writePhi3(_ messages: [ChatMessage], _ generation: Bool, _ writer: inout ChatWriter) {
        for message in messages where ["system", "user", "assistant"].contains(message.role) {
            writer.write("<|\(message.role)|>\n")
            writer.writeTurn(message, end: "<|end|>")
            writer.write("\n")
        }
        writer.write(generation ? "<|assistant|>\n" : "<|endoftext|>")
    }

    private static func writeGemma(_ messages: [ChatMessage], _ generation: Bool, _ writer: inout ChatWriter) {
        writer.write("<bos>")
        var turns = messages[...]
        var firstUserPrefix = ""
        if let first = turns.first, first.role == "system" {
            firstUserPrefix = first.content + "\n\n"
            turns = turns.dropFirst()
        }
        for (index, message) in turns.enumerated() {
            let role = message.role == "assistant" ? "model" : message.role
            writer.write("<start_of_turn>\(role)\n" + (index == 0 ? firstUserPrefix : ""))
            writer.writeTurn(ChatMessage(role: message.role, content: pythonStrip(message.content)), end: "<end_of_turn>")
            writer.write("\n")
        }
        if generation { writer.write("<start_of_turn>model\n") }
    }
}

/// Accumulates rendered text and the byte ranges of assistant replies.
private struct ChatWriter {
    var text = ""
    var ranges: [Range<Int>] = []

    mutating func write(_ part: String) {
        text += part
    }

    /// Writes a message's content and its end-of-turn marker, recording the range of both
    /// when the message is the assistant's.
    mutating func writeTurn(_ message: ChatMessage, end: String) {
        let start = text.utf8.count
        text += message.content + end
        if message.role == "assistant" { ranges.append(start..<text.utf8.count) }
    }
}

/// `text` without leading and trailing whitespace as Python's `str.strip()` (Jinja's `trim`)
/// sees it: Unicode White_Space and the separators U+001C to U+001F.
func pythonStrip(_ text: String) -> String {
    func isSpace(_ scalar: Unicode.Scalar) -> Bool {
        scalar.properties.isWhitespace || (0x1C...0x1F).contains(scalar.value)
    }
    let scalars = text.unicodeScalars
    guard let first = scalars.firstIndex(where: { !isSpace($0) }),
          let last = scalars.lastIndex(where: { !isSpace($0) }) else { return "" }
    return String(scalars[first...last])
}
