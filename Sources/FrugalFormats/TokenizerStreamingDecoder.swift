// TokenizerStreamingDecoder: text from ids that arrive one at a time, only whole characters.

/// Turns token ids into text as they are generated. A character spread over several tokens
/// (byte-level BPE, byte fallback) is handed out once all its bytes have arrived, and the text
/// handed out adds up to `decode` of all the ids.
///
/// Each new id is decoded together with the ids of the last piece handed out, so decoder steps
/// that look at neighbours (a leading space dropped only at the start of the text, a run of
/// byte tokens) see the context they would see in the whole sequence.
public struct StreamingDecoder: Sendable {
    private let tokenizer: Tokenizer
    private let skipSpecial: Bool
    /// The ids of the last piece handed out.
    private var context: [Int32] = []
    /// The text of `context` decoded alone.
    private var contextText = ""
    /// Ids whose text has not been handed out yet.
    private var pending: [Int32] = []

    /// A decoder over `tokenizer`; `skipSpecial` leaves special tokens out.
    public init(tokenizer: Tokenizer, skipSpecial: Bool = false) {
        self.tokenizer = tokenizer
        self.skipSpecial = skipSpecial
    }

    /// Adds one id and returns the text it completes ("" while a character is still partial).
    public mutating func append(_ id: Int32) -> String {
        pending.append(id)
        let text = tokenizer.decode(context + pending, skipSpecial: skipSpecial)
        guard text.unicodeScalars.last != "\u{FFFD}", text.utf8.count > contextText.utf8.count,
              text.utf8.starts(with: contextText.utf8) else { return "" }
        let newText = String(decoding: text.utf8.dropFirst(contextText.utf8.count), as: UTF8.self)
        context = pending
        contextText = tokenizer.decode(context, skipSpecial: skipSpecial)
        pending.removeAll()
        return newText
    }

    /// Ends the stream: the text of ids still pending (an unfinished character as U+FFFD).
    public mutating func finish() -> String {
        defer {
            context.removeAll()
            contextText = ""
            pending.removeAll()
        }
        guard !pending.isEmpty else { return "" }
        let text = tokenizer.decode(context + pending, skipSpecial: skipSpecial)
        guard text.utf8.starts(with: contextText.utf8) else { return tokenizer.decode(pending, skipSpecial: skipSpecial) }
        return String(decoding: text.utf8.dropFirst(contextText.utf8.count), as: UTF8.self)
    }
}
