// Generator: autoregressive decoding with a KV cache — prefill the prompt, then one token at a time.
import Foundation
import FrugalCore
import FrugalModels

/// Limits and sampling of one generation.
public struct GenerationOptions: Sendable {
    /// Most tokens to generate.
    public var maxTokens: Int = 256
    public var sampling = SamplingOptions()
    /// Tokens that end generation (EOS, end of turn); not included in the output.
    public var stopTokens: Set<Int32> = []

    public init(maxTokens: Int = 256, sampling: SamplingOptions = SamplingOptions(), stopTokens: Set<Int32> = []) {
        self.maxTokens = maxTokens; self.sampling = sampling; self.stopTokens = stopTokens
    }
}

/// Timing of a generation, split as the seeds report it: prefill (prompt) and decode.
public struct GenerationStatistics: Sendable, Codable {
    public var promptTokens = 0
    public var generatedTokens = 0
    public var prefillSeconds = 0.0
    public var decodeSeconds = 0.0
    /// Prompt tokens per second of prefill.
    public var prefillTokensPerSecond: Double { prefillSeconds > 0 ? Double(promptTokens) / prefillSeconds : 0 }
    /// Generated tokens per second of decoding (the first token comes from prefill).
    public var decodeTokensPerSecond: Double {
        decodeSeconds > 0 ? Double(max(generatedTokens - 1, 0)) / decodeSeconds : 0
    }
}

/// Generates tokens from a decoder with a KV cache.
public struct Generator {
    public let decoder: Decoder

    public init(decoder: Decoder) { self.decoder = decoder }

    /// Generates after `prompt`, calling `onToken` with each new token as soon as it is chosen.
    /// - Parameter onToken: return false to stop (e.g. a stop string appeared in the text).
    /// - Returns: the generated tokens (without the stop token) and timings.
    public func generate(prompt: [Int32], options: GenerationOptions,
                         onToken: (Int32) -> Bool = { _ in true }) -> (tokens: [Int32], statistics: GenerationStatistics) {
        precondition(!prompt.isEmpty, "generation needs at least one prompt token")
        let capacity = min(decoder.configuration.maxPositions, prompt.count + options.maxTokens)
        let cache = KVCache(backend: decoder.backend, configuration: decoder.configuration, capacity: capacity)
        var sampler = Sampler(options.sampling)
        var statistics = GenerationStatistics()
        statistics.promptTokens = prompt.count
        var history = prompt, output: [Int32] = []

        var clock = ContinuousClock.now
        var logits = decoder.backend.download(decoder.logits(prompt, cache: cache, lastOnly: true))
        statistics.prefillSeconds = (ContinuousClock.now - clock).inSeconds
        clock = .now
        while output.count < options.maxTokens {
            let token = sampler.next(logits, history: history)
            if options.stopTokens.contains(token) { break }
            output.append(token)
            history.append(token)
            statistics.generatedTokens = output.count
            if !onToken(token) || cache.length >= capacity { break }
            logits = decoder.backend.download(decoder.logits([token], cache: cache, lastOnly: true))
        }
        statistics.decodeSeconds = (ContinuousClock.now - clock).inSeconds
        return (output, statistics)
    }
}
