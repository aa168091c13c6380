// Optimizer+Offload: the offloaded update as a pipeline — gradients copied to pinned host memory
// a group at a time while the host updates the group before, and each weight queued back to the
// device as soon as the host has it.
import FrugalCore

extension Optimizer {
    /// Some parameters' gradients on their way to host memory (`send`): one pinned buffer per
    /// gradient, which then carries the updated weight back in the weight's dtype.
    struct GradientsInFlight {
        /// The parameters (indices in the trainable set).
        let indices: [Int]
        let copies: [HostCopy]
        /// Passed once every copy has landed.
        let arrived: DeviceFence
    }

    /// Queues the copies of `indices`' gradients to the host; the device goes on with its work.
    func send(_ indices: [Int]) -> GradientsInFlight {
        let copies = indices.map { backend.offload(parameters.parameters[$0].gradient) }
        return GradientsInFlight(indices: indices, copies: copies, arrived: backend.fence())
    }

    /// Σ g² of each gradient of `flight`, on the host once they have landed (a NaN or ∞ makes its
    /// sum non-finite).
    func sumsOfSquares(_ flight: GradientsInFlight) -> [Double] {
        flight.arrived.wait()
        return host!.sumsOfSquares(flight.copies.map(\.tensor))
    }

    /// Updates `flight`'s parameters on the host once their gradients have landed, and queues each
    /// weight's copy back to the device, in its dtype, through its gradient's buffer: rounded to
    /// nearest even from the master (fp16, bf16), or the host copy itself rounded in place first
    /// (fp32, pure bf16).
    func applyOnHost(_ flight: GradientsInFlight, rate: Float) {
        let host = host!, policy = configuration.precision
        flight.arrived.wait()
        for (index, gradient) in zip(flight.indices, flight.copies) {
            let slot = slots[index], weight = parameters.parameters[index].value, master = slot.master!
            update(slot, master, gradient: gradient.tensor, rate: rate, on: host)
            if !policy.keepsMasters { host.roundInPlace(master, to: policy.computeDType) }
            let bits = gradient.viewed(as: weight.dtype)
            host.copy(bits.tensor, at: 0, from: master)
            if policy.keepsMasters && weight.dtype == .f32 { host.roundInPlace(bits.tensor, to: policy.computeDType) }
            backend.upload(bits, into: weight)
        }
    }

    /// The pipeline's groups of `indices`: each block's parameters together, from the last block
    /// to the first (the order backward finishes them), then each parameter outside the blocks in
    /// the trainable set's order. `MemoryPlan` counts two consecutive groups in host memory.
    func offloadGroups(_ indices: [Int]) -> [[Int]] {
        var blocks = [Int: [Int]](), outside = [[Int]]()
        for i in indices {
            if let block = parameters.parameters[i].block { blocks[block, default: []].append(i) } else { outside.append([i]) }
        }
        return blocks.keys.sorted(by: >).map { blocks[$0]! } + outside
    }

    /// The offloaded update of `indices`: the next group's gradients cross while the host updates
    /// the group before and its weights go back.
    func applyOffloaded(rate: Float, to indices: [Int]) {
        var waiting: GradientsInFlight?
        for group in offloadGroups(indices) {
            let next = send(group)
            if let waiting { applyOnHost(waiting, rate: rate) }
            waiting = next
        }
        if let waiting { applyOnHost(waiting, rate: rate) }
    }
}
