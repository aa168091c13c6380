// Sampler: picks the next token from logits — greedy, temperature, top-k, top-p, repetition penalty.
import Foundation
import FrugalModels

/// How the next token is chosen.
public struct SamplingOptions: Sendable, Codable, Equatable {
    /// 0 means greedy (argmax).
    public var temperature: Float = 0
    /// Keep only the k most likely tokens (0 = all).
    public var topK: Int = 0
    /// Keep the smallest set of tokens whose probability reaches p (1 = all).
    public var topP: Float = 1
    /// Divide positive logits (multiply negative ones) of tokens already present by this (1 = off).
    public var repetitionPenalty: Float = 1
    /// Seed of the random stream.
    public var seed: UInt64 = 0

    public init(temperature: Float = 0, topK: Int = 0, topP: Float = 1, repetitionPenalty: Float = 1, seed: UInt64 = 0) {
        self.temperature = temperature; self.topK = topK; self.topP = topP
        self.repetitionPenalty = repetitionPenalty; self.seed = seed
    }
}

/// Chooses tokens from logits according to `SamplingOptions`, with its own seeded random stream.
public struct Sampler: Sendable {
    public let options: SamplingOptions
    private var random: SplitMix64

    public init(_ options: SamplingOptions) {
        self.options = options
        random = SplitMix64(seed: options.seed)
    }

    /// The next token, given the logits of the last position and the tokens so far.
    public mutating func next(_ logits: [Float], history: [Int32]) -> Int32 {
        var logits = logits
        if options.repetitionPenalty != 1 {
            for id in Set(history) where Int(id) < logits.count {
                let l = logits[Int(id)]
                logits[Int(id)] = l > 0 ? l / options.repetitionPenalty : l * options.repetitionPenalty
            }
        }
        if options.temperature <= 0 {
            var best = 0
            for i in logits.indices where logits[i] > logits[best] { best = i }
            return Int32(best)
        }
        var candidates = logits.indices.map { ($0, logits[$0] / options.temperature) }
        candidates.sort { $0.1 > $1.1 }
        if options.topK > 0 { candidates = Array(candidates.prefix(options.topK)) }
        let maximum = candidates[0].1
        var probabilities = candidates.map { Float(exp(Double($0.1 - maximum))) }
        let total = probabilities.reduce(0, +)
        probabilities = probabilities.map { $0 / total }
        if options.topP < 1 {
            var cumulative: Float = 0, keep = 0
            while keep < probabilities.count && cumulative < options.topP {
                cumulative += probabilities[keep]; keep += 1
            }
            candidates = Array(candidates.prefix(keep))
            probabilities = Array(probabilities.prefix(keep))
            let kept = probabilities.reduce(0, +)
            probabilities = probabilities.map { $0 / kept }
        }
        var r = random.nextUniform()
        for (i, p) in probabilities.enumerated() {
            r -= p
            if r <= 0 { return Int32(candidates[i].0) }
        }
        return Int32(candidates[candidates.count - 1].0)
    }
}
