// FusedStep: the optimizer step fused into backward — each block's weights are checked and
// updated as soon as backward has their gradients, so one block's gradients live at a time.
import FrugalCore
import FrugalModels

/// One step's update applied block by block during backward (as torchtune's optimizer-in-backward
/// does), then to the parameters outside the blocks (embeddings, final norm, head) at the end.
///
/// With `TrainableParameters.sharesBlockGradients`, every block writes its gradients into the
/// same tensors, zeroed again after each block's update: the gradients then take one block's
/// memory instead of the model's. The arithmetic of each update is the unfused one's, so the
/// weights come out bit-identical. What needs every gradient first is ruled out: gradient
/// accumulation, global-norm clipping, fp16's loss-scale check. A non-finite gradient stops the
/// step at that block (the blocks after it, updated already, keep their update) and `finish`
/// reports it.
///
/// With the optimizer offloaded, a block's gradients leave for the host as soon as backward has
/// them, and the host checks and updates that block when the next one is done, while the device
/// computes the next block's backward: the update overlaps backward instead of stopping it.
final class FusedStep {
    let rate: Float
    private let optimizer: Optimizer
    private let parameters: TrainableParameters
    private let backend: TrainingBackend
    private let timer: PhaseTimer
    /// The indices of each block's parameters in the trainable set.
    private let blockSlots: [Int: [Int]]
    private var updated = Set<Int>()
    /// Offloaded: the last group sent to the host, checked and applied when the next one is sent.
    private var waiting: Optimizer.GradientsInFlight?
    private var squares = 0.0
    private var fault: String?

    /// Starts the update of `trainer`'s next step at learning rate `rate`.
    init(_ trainer: Trainer, rate: Float) {
        self.rate = rate
        optimizer = trainer.optimizer
        parameters = trainer.parameters
        backend = trainer.backend
        timer = trainer.phaseTimer
        var slots = [Int: [Int]]()
        for (i, p) in parameters.parameters.enumerated() {
            if let block = p.block { slots[block, default: []].append(i) }
        }
        blockSlots = slots
        optimizer.beginUpdate()
    }

    /// - Throws: `FrugalError.invalidArgument` for what the fused step cannot do.
    static func check(_ configuration: TrainingConfiguration) throws {
        var conflicts = [String]()
        if configuration.gradientAccumulation > 1 { conflicts.append("gradient accumulation (\(configuration.gradientAccumulation))") }
        if configuration.maxGradientNorm > 0 { conflicts.append("gradient clipping (max norm \(configuration.maxGradientNorm))") }
        if configuration.precision == .fp16 { conflicts.append("fp16 loss scaling") }
        guard conflicts.isEmpty else {
            throw FrugalError.invalidArgument("the fused optimizer step updates each block before the others have gradients, so it cannot do "
                + conflicts.joined(separator: ", ") + "; turn those off or the fused step")
        }
    }

    /// Backward finished block `index`: check and update its parameters (offloaded: send them, and
    /// check and update the block sent before).
    func blockDone(_ index: Int) {
        let indices = blockSlots[index] ?? []
        if optimizer.host != nil { return sendToHost(indices, zeroAfter: parameters.sharesBlockGradients) }
        update(indices, zeroAfter: parameters.sharesBlockGradients)
    }

    /// Updates the parameters outside the blocks (offloaded: one at a time, after the last block sent).
    /// - Returns: the global gradient norm (every parameter's, each counted once).
    /// - Throws: `FrugalError.numericalFault` naming the first non-finite gradient, or the loss.
    func finish(loss: Double, step: Int) throws -> Double {
        let sent = Set(waiting?.indices ?? [])
        let rest = parameters.parameters.indices.filter { !updated.contains($0) && !sent.contains($0) }
        if optimizer.host != nil {
            for index in rest { sendToHost([index], zeroAfter: false) }
            if let waiting { applyOnHost(waiting) }
        } else {
            update(rest, zeroAfter: false)
        }
        if let fault { throw FrugalError.numericalFault(step: step, detail: "non-finite gradient in '\(fault)' (fused step: the blocks after it were updated)") }
        guard loss.isFinite else { throw FrugalError.numericalFault(step: step, detail: "the loss is \(loss)") }
        return squares.squareRoot()
    }

    /// Checks and updates `indices` on the device.
    private func update(_ indices: [Int], zeroAfter: Bool) {
        guard !indices.isEmpty else { return }
        let gradients = indices.map { parameters.parameters[$0].gradient }
        checkThenApply(indices, sums: { backend.sumsOfSquares(gradients) }) {
            optimizer.apply(rate: rate, to: indices)
            if zeroAfter { backend.zero(gradients) }
        }
    }

    /// Offloaded: queues `indices`' gradients to the host (zeroing shared ones behind the copies),
    /// then checks and updates the group sent before.
    private func sendToHost(_ indices: [Int], zeroAfter: Bool) {
        guard fault == nil, !indices.isEmpty else { return }
        let flight = optimizer.send(indices)
        if zeroAfter { backend.zero(indices.map { parameters.parameters[$0].gradient }) }
        if let waiting { applyOnHost(waiting) }
        waiting = flight
    }

    /// Offloaded: checks `flight`'s gradients on the host and updates them there.
    private func applyOnHost(_ flight: Optimizer.GradientsInFlight) {
        checkThenApply(flight.indices, sums: { optimizer.sumsOfSquares(flight) }) { optimizer.applyOnHost(flight, rate: rate) }
    }

    /// Adds `indices`' sums of squares to the norm and runs `apply`, unless a sum is not finite
    /// (then records the fault) or an earlier group's was; the time goes to the optimizer phase,
    /// what came before to backward.
    private func checkThenApply(_ indices: [Int], sums: () -> [Double], apply: () -> Void) {
        guard fault == nil else { return }
        timer.mark(.backward)
        defer { timer.mark(.optimizer) }
        let sums = sums()
        if let bad = sums.firstIndex(where: { !$0.isFinite }) {
            fault = parameters.parameters[indices[bad]].name
            return
        }
        squares += sums.reduce(0, +)
        apply()
        updated.formUnion(indices)
    }
}
