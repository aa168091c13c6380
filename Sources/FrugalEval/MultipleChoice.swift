// MultipleChoice: log-likelihood scoring of answer strings after a prompt — the model "chooses"
// the answer whose tokens it finds most probable — with accuracy and sycophancy rate.
import Foundation
import FrugalCore
import FrugalFormats
import FrugalModels

/// One question: a prompt, the answer strings, and which answers are right (and which would
/// only agree with the user).
public struct MultipleChoiceItem: Sendable, Equatable {
    /// The text before the answer (for the sycophancy data, ending in "Answer:").
    public var prompt: String
    /// The answer strings, each scored as the text that follows the prompt (" (A)").
    public var choices: [String]
    /// Indices of the correct choices.
    public var correct: Set<Int>
    /// Indices of the choices that agree with the view the user states (empty when the task
    /// has no such notion).
    public var sycophantic: Set<Int>
    /// The line of the data file the item comes from (1-based; 0 when not from a file).
    public var line: Int

    /// An item.
    public init(prompt: String, choices: [String], correct: Set<Int>, sycophantic: Set<Int> = [], line: Int = 0) {
        self.prompt = prompt
        self.choices = choices
        self.correct = correct
        self.sycophantic = sycophantic
        self.line = line
    }
}

/// The model's log-likelihood of one choice.
public struct ChoiceScore: Sendable, Equatable {
    /// Sum of the log-probabilities (nats) of the choice's tokens given what precedes them.
    public var logProbability: Double
    /// Tokens scored.
    public var tokens: Int
}

/// Scores answer strings by their log-likelihood under a decoder.
///
/// **Token boundaries.** A choice is scored as a continuation of the prompt: the scorer encodes
/// the context text alone, `P`, and the context followed by the choice, `F`, and scores the
/// tokens of `F` after the longest prefix it shares with `P`, each given all of `F` before it.
/// So the choice's tokens are those the tokenizer produces when it sees the whole text (a
/// leading space joins the choice's first word, " (B)" → "Ġ(", "B", ")"), and a prompt token
/// that merges with the start of the choice is scored as part of the choice. At least the
/// first token of `F` is context.
///
/// **Raw or chat.** Without a template the context is the prompt itself, encoded with the
/// tokenizer's special tokens (BOS where the model uses one). With a template it is the
/// prompt as a user turn, rendered with the assistant header (and the template's default
/// system prompt), and the choice is the start of the reply, without its leading whitespace.
///
/// All choices of an item run through the model together, as one batch of rows padded at the
/// end (causal attention keeps the padding from reaching the scored positions), and only the
/// positions that predict choice tokens go through the output head.
public struct MultipleChoiceScorer {
    /// The model whose likelihoods are compared.
    public let decoder: Decoder
    /// The model's tokenizer.
    public let tokenizer: Tokenizer
    /// The chat format the prompt is put in; nil scores raw text.
    public let template: ChatTemplate?
    /// The system message the template adds when none is given.
    public let defaultSystemPrompt: String?

    /// A scorer.
    public init(decoder: Decoder, tokenizer: Tokenizer, template: ChatTemplate? = nil, defaultSystemPrompt: String? = nil) {
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.template = template
        self.defaultSystemPrompt = defaultSystemPrompt
    }

    /// The context text the choices continue: the raw prompt, or its rendering as a user turn.
    public func context(_ prompt: String) -> String {
        guard let template else { return prompt }
        return template.render([ChatMessage(role: "user", content: prompt)], addGenerationPrompt: true,
                               defaultSystemPrompt: defaultSystemPrompt)
    }

    /// The text a choice adds to the context: as is when raw, without leading whitespace in a
    /// chat reply.
    public func continuation(_ choice: String) -> String {
        template == nil ? choice : String(choice.drop { $0.isWhitespace })
    }

    /// The tokens of the context followed by `choice`, and where the choice's tokens start.
    public func encode(prompt: String, choice: String) -> (tokens: [Int32], firstScored: Int) {
        let context = context(prompt)
        let special = template == nil
        let prefix = tokenizer.encode(context, addSpecialTokens: special)
        let full = tokenizer.encode(context + continuation(choice), addSpecialTokens: special)
        var shared = 0
        while shared < min(prefix.count, full.count) && prefix[shared] == full[shared] { shared += 1 }
        return (full, min(max(shared, 1), full.count))
    }

    /// The log-likelihood of each choice of `item`.
    public func score(_ item: MultipleChoiceItem) -> [ChoiceScore] {
        let encoded = item.choices.map { encode(prompt: item.prompt, choice: $0) }
        let length = encoded.map(\.tokens.count).max() ?? 0
        guard length > 0 else { return [] }
        var rows = [Int32]()
        for (tokens, _) in encoded {
            rows += tokens + [Int32](repeating: tokens.last ?? 0, count: length - tokens.count)
        }
        let hidden = decoder.hiddenStates(rows, batch: encoded.count)
        // Gather the positions that predict a choice token: row r, position t predicts token t + 1.
        let scoredRows = encoded.enumerated().flatMap { r, e in (e.firstScored - 1..<e.tokens.count - 1).map { r * length + $0 } }
        guard !scoredRows.isEmpty else { return encoded.map { _ in ChoiceScore(logProbability: 0, tokens: 0) } }
        let backend = decoder.backend, width = hidden.shape.last, vocab = decoder.configuration.vocabSize
        let gathered = backend.zeros([scoredRows.count, width], .f32, .activations)
        for (i, row) in scoredRows.enumerated() { backend.copy(gathered, at: i * width, from: hidden.rows(row..<row + 1)) }
        let logits = backend.zeros([scoredRows.count, vocab], .f32, .activations)
        backend.linear(logits, gathered, decoder.weights.head, bias: nil)
        let values = backend.download(logits)
        var next = 0
        return encoded.map { tokens, first in
            var sum = 0.0
            for t in first..<tokens.count {
                sum += Self.logSoftmax(values[next * vocab..<(next + 1) * vocab], at: Int(tokens[t]))
                next += 1
            }
            return ChoiceScore(logProbability: sum, tokens: tokens.count - first)
        }
    }

    /// `log softmax(logits)[index]`, in double precision.
    static func logSoftmax(_ logits: ArraySlice<Float>, at index: Int) -> Double {
        let maximum = Double(logits.max() ?? 0)
        var total = 0.0
        for value in logits { total += exp(Double(value) - maximum) }
        return Double(logits[logits.startIndex + index]) - maximum - log(total)
    }
}

/// What the model chose for one item.
public struct MultipleChoiceOutcome: Sendable, Codable, Equatable {
    /// The item's line in its file.
    public var line: Int
    /// Summed log-probability of each choice.
    public var logProbabilities: [Double]
    /// The index of the most likely choice (the first of equals).
    public var chosen: Int
    /// Whether the chosen answer is correct.
    public var isCorrect: Bool
    /// Whether the chosen answer is a sycophantic one.
    public var isSycophantic: Bool
    /// The probability of the correct choices when the choices' likelihoods are normalized
    /// among themselves: a smooth version of being right.
    public var correctMass: Double
}

/// Accuracy (and sycophancy rate) of one model on a set of items.
public struct MultipleChoiceResult: Sendable, Codable, Equatable {
    /// Items on which the most likely answer is correct.
    public var accuracy: Proportion
    /// Items on which the most likely answer only agrees with the user; nil when no item marks
    /// sycophantic answers.
    public var sycophancyRate: Proportion?
    /// Mean over items of the normalized probability of the correct choices.
    public var meanCorrectMass: Double
    /// Each item's outcome, in order.
    public var outcomes: [MultipleChoiceOutcome]

    /// The result of a list of outcomes.
    /// - Parameter marksSycophancy: whether the items mark sycophantic answers.
    public init(outcomes: [MultipleChoiceOutcome], marksSycophancy: Bool) {
        self.outcomes = outcomes
        accuracy = Proportion(count: outcomes.filter(\.isCorrect).count, total: outcomes.count)
        sycophancyRate = marksSycophancy ? Proportion(count: outcomes.filter(\.isSycophantic).count, total: outcomes.count) : nil
        meanCorrectMass = outcomes.isEmpty ? 0 : outcomes.reduce(0) { $0 + $1.correctMass } / Double(outcomes.count)
    }
}

extension MultipleChoiceScorer {
    /// The model's choice on one item.
    public func outcome(_ item: MultipleChoiceItem) -> MultipleChoiceOutcome {
        precondition(!item.choices.isEmpty, "an item without choices (line \(item.line))")
        let scores = score(item).map(\.logProbability)
        var chosen = 0
        for i in scores.indices where scores[i] > scores[chosen] { chosen = i }
        let maximum = scores[chosen]
        let weights = scores.map { exp($0 - maximum) }
        let total = weights.reduce(0, +)
        let correctMass = item.correct.reduce(0) { $0 + weights[$1] } / total
        return MultipleChoiceOutcome(line: item.line, logProbabilities: scores, chosen: chosen,
                                     isCorrect: item.correct.contains(chosen), isSycophantic: item.sycophantic.contains(chosen),
                                     correctMass: correctMass)
    }

    /// Scores every item.
    /// - Parameter progress: called after each item with the number done.
    public func evaluate(_ items: [MultipleChoiceItem], progress: (Int) -> Void = { _ in }) -> MultipleChoiceResult {
        var outcomes = [MultipleChoiceOutcome]()
        for item in items {
            outcomes.append(outcome(item))
            progress(outcomes.count)
        }
        return MultipleChoiceResult(outcomes: outcomes, marksSycophancy: items.contains { !$0.sycophantic.isEmpty })
    }
}
