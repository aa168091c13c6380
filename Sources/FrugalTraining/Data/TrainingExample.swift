// TrainingExample: one record of a training data set, before tokenization.
import FrugalFormats

/// One training record: a conversation, or plain text.
public struct TrainingExample: Sendable, Equatable {
    /// What a record holds.
    public enum Content: Sendable, Equatable {
        /// A conversation, rendered with the model's chat template; only the assistant's
        /// replies are trained (see `ExampleTokenizer`).
        case chat([ChatMessage])
        /// Plain text, trained on every token.
        case text(String)
    }

    /// The record's content.
    public var content: Content

    /// A conversation.
    public init(messages: [ChatMessage]) {
        content = .chat(messages)
    }

    /// Plain text.
    public init(text: String) {
        content = .text(text)
    }
}
