// Perplexity: mean negative log-likelihood of target tokens, and its exponential, over token
// sequences (tokenized held-out records).
import Foundation
import FrugalModels

/// Mean negative log-likelihood per target token and perplexity, `exp(mean NLL)`.
public struct PerplexityResult: Sendable, Codable, Equatable {
    /// Sequences scored.
    public var sequences: Int
    /// Target tokens scored (prompt tokens of a conversation are not targets).
    public var tokens: Int
    /// Summed negative log-likelihood (nats).
    public var totalNLL: Double
    /// `totalNLL / tokens` (nats per token).
    public var meanNLL: Double { tokens > 0 ? totalNLL / Double(tokens) : 0 }
    /// `exp(meanNLL)`.
    public var perplexity: Double { exp(meanNLL) }

    /// A result.
    public init(sequences: Int, tokens: Int, totalNLL: Double) {
        self.sequences = sequences
        self.tokens = tokens
        self.totalNLL = totalNLL
    }

    enum CodingKeys: String, CodingKey { case sequences, tokens, totalNLL, meanNLL, perplexity }

    public init(from decoder: Swift.Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(sequences: try c.decode(Int.self, forKey: .sequences), tokens: try c.decode(Int.self, forKey: .tokens),
                  totalNLL: try c.decode(Double.self, forKey: .totalNLL))
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(sequences, forKey: .sequences)
        try c.encode(tokens, forKey: .tokens)
        try c.encode(totalNLL, forKey: .totalNLL)
        try c.encode(meanNLL, forKey: .meanNLL)
        try c.encode(perplexity, forKey: .perplexity)
    }
}

/// Computes the perplexity of a decoder on token sequences.
public enum Perplexity {
    /// The loss of `decoder` over the target tokens of `sequences`.
    ///
    /// Each sequence gives its tokens and, per position, the token to predict there or a
    /// negative number where nothing is predicted (prompt tokens, padding), as
    /// `TokenizedExample` lays them out. Sequences are packed end to end into rows of about
    /// `tokensPerPass` tokens, each its own segment (attention stays inside a sequence and
    /// positions restart), so the result is that of scoring each sequence alone.
    /// - Parameters:
    ///   - progress: called after each forward pass with the number of sequences done.
    public static func evaluate(_ decoder: Decoder, sequences: [(tokens: [Int32], targets: [Int32])],
                                tokensPerPass: Int = 2048, progress: (Int) -> Void = { _ in }) -> PerplexityResult {
        var totalNLL = 0.0, tokens = 0, done = 0
        var row = (tokens: [Int32](), targets: [Int32](), positions: [Int32](), segments: [Int32]())
        func flush() {
            guard !row.tokens.isEmpty else { return }
            let batch = TrainingBatch(tokens: row.tokens, targets: row.targets, positions: row.positions,
                                      segments: row.segments, batch: 1)
            totalNLL += decoder.loss(batch)
            tokens += batch.targetCount
            row = ([], [], [], [])
            progress(done)
        }
        for sequence in sequences {
            precondition(sequence.tokens.count == sequence.targets.count, "tokens and targets differ in length")
            if !row.tokens.isEmpty && row.tokens.count + sequence.tokens.count > tokensPerPass { flush() }
            let segment = Int32(row.segments.last.map { $0 + 1 } ?? 0)
            row.tokens += sequence.tokens
            row.targets += sequence.targets.map { $0 < 0 ? -100 : $0 }
            row.positions += (0..<sequence.tokens.count).map(Int32.init)
            row.segments += repeatElement(segment, count: sequence.tokens.count)
            done += 1
        }
        flush()
        return PerplexityResult(sequences: sequences.count, tokens: tokens, totalNLL: totalNLL)
    }
}
