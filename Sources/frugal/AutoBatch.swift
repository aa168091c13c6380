// AutoBatch: before training starts, tell the backend what to suggest if memory runs out, and with
// --auto-batch shrink the micro-batch (accumulating more) until `frugal plan` says it fits.
import ArgumentParser
import FrugalCore
import FrugalTraining

extension Frugal.Train {
    /// Sets the ledger's out-of-memory advice from the plan of this run against the memory Frugal
    /// may use and, with `--auto-batch`, picks the largest micro-batch that fits — gradient
    /// accumulation raised so the effective batch is unchanged.
    /// - Returns: the configuration to train with, and the plan's predicted peak for it.
    /// - Throws: when `--auto-batch` finds that not even one sequence per micro-batch fits.
    func fitMemory(_ configuration: TrainingConfiguration, _ run: RunSetUp) throws -> (TrainingConfiguration, predictedPeak: Int) {
        let backend = run.compute.backend, budget = run.compute.memoryBudget()
        let full = configuration.method == .full
        let plan = MemoryPlan.Configuration(
            model: run.decoder.configuration, baseDType: full ? .f32 : run.decoder.weights.blocks[0].query.weight.dtype,
            method: configuration.method, precision: configuration.precision, optimizer: configuration.optimizer,
            microBatch: configuration.microBatch, sequenceLength: maxLength, checkpointing: configuration.checkpointing,
            fusedOptimizerStep: configuration.fusedOptimizerStep, offloadOptimizer: configuration.offloadOptimizer,
            offloadActivations: configuration.offloadActivations, activations: configuration.activations, device: backend.device,
            frozenLayers: configuration.frozenLayers)
        // The weights as loaded (a GGUF file mixes block types); a full fine-tune's are all trainable.
        let weights = full ? nil : backend.ledger.snapshot.current[.weights, default: 0]
        let suggestion = try withCleanErrors { try MemoryPlan.suggestion(for: plan, fitting: budget, weights: weights) }
        backend.ledger.advice = suggestion.map { s in
            let options = s.options(from: plan, accumulation: configuration.gradientAccumulation)
            let peak = "predicted peak \(formatBytes(s.peakTotal(measuredWeights: weights))) of \(formatBytes(budget))"
            return options.isEmpty ? "these settings fit (\(peak)); is another process using the memory?" : "\(options) (\(peak))"
        } ?? "nothing fits in \(formatBytes(budget)), not even --batch 1 with --checkpointing; try --method lora, fewer --lora-targets, a shorter --max-length or a smaller model"
        guard autoBatch else {
            return (configuration, try withCleanErrors { try MemoryPlan.predict(plan) }.peakTotal(measuredWeights: weights))
        }
        guard !configuration.fusedOptimizerStep else {
            throw failure("--auto-batch keeps the step's sequences by raising --grad-accum, which --fused-step cannot do")
        }
        guard let fitted = try withCleanErrors({ try MemoryPlan.largestMicroBatch(plan, fitting: budget, weights: weights) }) else {
            throw failure("--auto-batch: not even --batch 1 fits in \(formatBytes(budget)); `frugal plan` suggests: \(backend.ledger.advice ?? "")")
        }
        var c = configuration
        let size = fitted.configuration.microBatch
        let peak = formatBytes(fitted.peakTotal(measuredWeights: weights))
        if size == c.microBatch {
            print("auto-batch: --batch \(size) fits (predicted peak \(peak) of \(formatBytes(budget)))")
        } else {
            c.gradientAccumulation *= c.microBatch / size
            print("auto-batch: --batch \(c.microBatch) → \(size), --grad-accum \(configuration.gradientAccumulation) → \(c.gradientAccumulation), the same \(c.microBatch * configuration.gradientAccumulation) sequences per step (predicted peak \(peak) of \(formatBytes(budget)))")
            c.microBatch = size
        }
        return (c, fitted.peakTotal(measuredWeights: weights))
    }
}
