// DataFormat: the record layouts a training data file may use, and how one is recognized.

/// The layout of the records in a training data file.
///
/// JSON formats may be stored as one JSON array (`.json`) or as JSON lines, one record per
/// line (`.jsonl`); which one is told by the file's first character, not its extension.
public enum DataFormat: String, Sendable, Codable, CaseIterable {
    /// Stanford Alpaca: `instruction`, optional `input`, `output`; optional `system` and
    /// `history` (a list of `[instruction, response]` pairs), as LLaMA-Factory reads them.
    case alpaca
    /// OpenAI chat: `messages`, a list of `{"role": "system"|"user"|"assistant", "content": …}`.
    case messages
    /// ShareGPT: `conversations`, a list of `{"from": "system"|"human"|"gpt", "value": …}`;
    /// optional `system`.
    case shareGPT = "sharegpt"
    /// Plain text: a `.txt` file as one text, or JSON records with a `text` field.
    case text

    /// The format a JSON record's fields announce, or nil when none does.
    static func detect(fromFieldsOf record: [String: Any]) -> DataFormat? {
        if record["messages"] != nil { return .messages }
        if record["conversations"] != nil { return .shareGPT }
        if record["instruction"] != nil || record["output"] != nil { return .alpaca }
        if record["text"] != nil { return .text }
        return nil
    }
}
