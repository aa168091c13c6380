// MemoryPlan+Fit: the micro-batch that fits a memory budget with the effective batch unchanged
// (`--auto-batch`), and what to suggest when a run runs out of memory.
import FrugalCore

extension MemoryPlan {
    /// The micro-batches that keep an effective batch of `batch` sequences whole: its divisors,
    /// largest first.
    public static func microBatches(dividing batch: Int) -> [Int] {
        (1...max(batch, 1)).reversed().filter { batch % $0 == 0 }
    }

    /// The largest micro-batch dividing `configuration.microBatch` whose predicted peak fits in
    /// `budget` bytes, or nil when not even one sequence does.
    ///
    /// - Parameter weights: the bytes the loaded weights measure in the ledger, used in place of
    ///   the prediction's `weights` (a GGUF file mixes block types the plan does not see).
    public static func largestMicroBatch(_ configuration: Configuration, fitting budget: Int,
                                         weights: Int? = nil) throws -> MemoryPlan? {
        for size in microBatches(dividing: configuration.microBatch) {
            var c = configuration
            c.microBatch = size
            let plan = try predict(c)
            if plan.peakTotal(measuredWeights: weights) <= budget { return plan }
        }
        return nil
    }

    /// The fastest variant of `configuration` that fits in `budget` bytes — a divisor of its
    /// micro-batch (accumulating the rest), with and without checkpointing — or nil.
    public static func suggestion(for configuration: Configuration, fitting budget: Int, weights: Int? = nil) throws -> MemoryPlan? {
        var plans = [MemoryPlan]()
        for checkpointing in [false, true] {
            for size in microBatches(dividing: configuration.microBatch) {
                var c = configuration
                c.microBatch = size
                c.checkpointing = checkpointing || configuration.checkpointing
                plans.append(try predict(c))
            }
        }
        // Every variant predicts the same weights.
        return fastest(plans, fitting: plans[0].budget(budget, measuredWeights: weights))
    }

    /// The predicted peak with the measured weights in place of the predicted ones, when given.
    public func peakTotal(measuredWeights: Int?) -> Int {
        peakTotal - peak[.weights, default: 0] + (measuredWeights ?? peak[.weights, default: 0])
    }

    /// `budget` as this plan's figures see it: less what the measured weights hold beyond the
    /// predicted ones (or more, when they hold less).
    func budget(_ budget: Int, measuredWeights: Int?) -> Int {
        budget - peakTotal(measuredWeights: measuredWeights) + peakTotal
    }

    /// The change to make, as command-line options: e.g. "--batch 2 --grad-accum 4 --checkpointing".
    /// - Parameter accumulation: the gradient accumulation of the run being changed.
    public func options(from original: Configuration, accumulation: Int) -> String {
        let c = configuration
        var parts = [String]()
        if c.microBatch != original.microBatch {
            parts.append("--batch \(c.microBatch) --grad-accum \(accumulation * original.microBatch / c.microBatch)")
        }
        if c.checkpointing && !original.checkpointing { parts.append("--checkpointing") }
        return parts.joined(separator: " ")
    }
}
