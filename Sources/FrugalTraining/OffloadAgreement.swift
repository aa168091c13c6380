// OffloadAgreement: a few training steps with the optimizer or the activations offloaded against
// the same steps without, on one backend — what `frugal gpu-check` runs to validate offload on a GPU.
import Foundation
import FrugalCore
import FrugalFormats
import FrugalModels

/// Trains a small random Llama-style model for a few full fine-tune steps with each offload and
/// without, on fresh backends of one kind, and compares the weights and where the memory went.
///
/// With the optimizer offloaded the update runs on the CPU while the device's runs on the device, so
/// a GPU agrees within its ops' tolerance (bit for bit on the CPU); activation offload only moves
/// bytes, so it agrees as far as the device repeats itself.
public enum OffloadAgreement {
    /// Relative tolerances: f32 weights, and weights rounded to bf16 (a different last bit can round
    /// to the neighbouring bf16 value).
    public static let f32Tolerance = 1e-4
    public static let bf16Tolerance = 1e-2

    /// The model: 3 layers, width 128, grouped-query attention, vocabulary 512.
    static let model = ModelConfiguration(architecture: .llama, vocabSize: 512, hiddenSize: 128, intermediateSize: 256, layers: 3,
                                          heads: 4, kvHeads: 2, headDim: 32, maxPositions: 256, normEps: 1e-5)

    /// Runs every check, each on two new backends from `makeBackend`.
    /// - Parameter report: called with each result as soon as it is known.
    public static func run(makeBackend: () throws -> TrainingBackend,
                           report: (CheckResult) -> Void = { _ in }) throws -> [CheckResult] {
        let cases: [(String, (inout TrainingConfiguration) -> Void)] = [
            ("optimizer offloaded, AdamW, fp32", { $0.offloadOptimizer = true }),
            ("optimizer offloaded, 8-bit AdamW, bf16, fused step",
             { $0.offloadOptimizer = true; $0.optimizer = .adamW8bit; $0.precision = .bf16; $0.fusedOptimizerStep = true }),
            ("optimizer offloaded, SGD, pure bf16", { $0.offloadOptimizer = true; $0.optimizer = .sgd; $0.precision = .pureBF16 }),
            ("activations offloaded, checkpointing", { $0.checkpointing = true; $0.offloadActivations = true }),
        ]
        var results = [CheckResult]()
        for (name, offload) in cases {
            var offloaded = baseConfiguration()
            offload(&offloaded)
            var plain = offloaded
            plain.offloadOptimizer = false
            plain.offloadActivations = false
            let reference = try train(plain, on: makeBackend()), candidate = try train(offloaded, on: makeBackend())
            let (error, index) = CheckResult.worstDifference(reference.weights, candidate.weights)
            let tolerance = offloaded.precision == .fp32 ? f32Tolerance : bf16Tolerance
            var problems = [String]()
            if !(error <= tolerance) {
                problems.append("weight \(index): \(reference.weights[index]) without offload, \(candidate.weights[index]) with")
            }
            let device = candidate.device.peak, host = candidate.host.peak
            if offloaded.offloadOptimizer && (device[.optimizer, default: 0] != 0 || host[.optimizer, default: 0] == 0) {
                problems.append("optimizer memory: \(device[.optimizer, default: 0]) bytes on the device, \(host[.optimizer, default: 0]) on the host")
            }
            let blockInputs = model.layers * 4 * batch * length * model.hiddenSize
            if offloaded.offloadActivations && host[.activations, default: 0] != blockInputs {
                problems.append("host activations \(host[.activations, default: 0]) bytes, block inputs \(blockInputs)")
            }
            let saved = (reference.device.peak[.optimizer, default: 0] - device[.optimizer, default: 0])
                + (reference.device.peak[.activations, default: 0] - device[.activations, default: 0])
            let result = CheckResult(
                name: "offload: \(name), \(steps) steps against none", passed: problems.isEmpty, maxError: error, tolerance: tolerance,
                detail: problems.isEmpty ? "device \(saved) bytes lighter, host holds \(candidate.host.peakTotal)"
                                         : problems.joined(separator: "; "))
            report(result)
            results.append(result)
        }
        return results
    }

    static let steps = 3, batch = 2, length = 32

    /// A full fine-tune at a small constant rate, no clipping (the fused step allows none).
    static func baseConfiguration() -> TrainingConfiguration {
        var c = TrainingConfiguration()
        c.method = .full
        c.steps = steps
        c.microBatch = batch
        c.learningRate = 1e-3
        c.schedule = .constant
        c.maxGradientNorm = 0
        c.weightDecay = 0.01
        return c
    }

    /// Trains `configuration` on a fresh random model on `backend`: the weights after, and the peaks.
    static func train(_ configuration: TrainingConfiguration, on backend: TrainingBackend) throws
        -> (weights: [Float], device: MemorySnapshot, host: MemorySnapshot) {
        // Stored as the policy stores them (bf16 under pure bf16).
        let decoder = Decoder.random(model, on: backend, category: .trainable, dtype: configuration.precision.createdDType,
                                     seed: 1)
        let parameters = try decoder.allWeights(shareBlockGradients: configuration.fusedOptimizerStep)
        var random = SplitMix64(seed: 2)
        let sequences = (0..<(steps * batch)).map { _ in
            let ids = (0...length).map { _ in Int32(random.next() % UInt64(model.vocabSize)) }
            return TokenizedExample(tokens: Array(ids.dropLast()), targets: Array(ids.dropFirst()))
        }
        let loader = try DataLoader(sequences: sequences, batchSize: batch, strategy: .padding(length: length), shuffle: false)
        let trainer = try Trainer(decoder: decoder, parameters: parameters, configuration: configuration, loader: loader)
        while !trainer.isFinished { _ = try trainer.trainStep() }
        return (parameters.parameters.flatMap { backend.download($0.value) }, backend.ledger.snapshot, backend.hostLedger.snapshot)
    }
}
