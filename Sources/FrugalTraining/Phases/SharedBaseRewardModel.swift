// SharedBaseRewardModel: the reward model of phase 2 scoring PPO's rollouts on the policy's own
// base weights — its LoRA adapters are swapped into the decoder to score, then swapped back.
import Foundation
import FrugalCore
import FrugalFormats
import FrugalModels

/// A reward model (LoRA adapters and a value head, as `RewardModelTrainer` trains them) that
/// shares the policy's frozen base: no second copy of the base weights is held.
///
/// Its adapters are kept aside as frozen copies (`weights` memory). To score, the policy's
/// adapter values are stashed (`workspace` memory), the reward model's are copied into the
/// same adapter tensors, the sequences run, and the policy's values are copied back. The
/// extra memory is two adapter sets; the cost, two copies of them per scoring. It requires
/// the policy's adapters to have the reward model's layout (targets, rank, alpha).
public final class SharedBaseRewardModel: @unchecked Sendable {
    public let decoder: Decoder
    /// The reward model's head.
    public let head: ValueHead
    let backend: TrainingBackend
    /// For each adapter tensor of the policy: the reward model's value, and room for the policy's.
    let slots: [(live: Tensor, reward: Tensor, stash: Tensor)]

    /// The reward model of `folder` (`adapter/` in PEFT's layout and `value_head.safetensors`,
    /// as `frugal train --phase reward` writes them) on `decoder`, and the policy's adapters,
    /// attached with `lora` after the reward model's were read.
    /// - Returns: the reward model, and the policy's adapters as the trainable set.
    /// - Throws: file errors; `FrugalError.invalidArgument` when `lora` does not adapt the
    ///   projections the reward model adapts with the same rank and scale.
    public static func load(from folder: URL, decoder: Decoder, policy lora: LoRAConfiguration, seed: UInt64,
                            frozenLayers: Set<Int> = []) throws -> (SharedBaseRewardModel, TrainableParameters) {
        guard let backend = decoder.backend as? TrainingBackend else {
            throw FrugalError.invalidArgument("this backend cannot hold LoRA adapters")
        }
        let head = try ValueHead.load(from: folder.appendingPathComponent(ValueHead.fileName), backend: backend,
                                      width: decoder.weights.head.shape.last)
        // The reward adapters' gradient buffers are released before the policy's are allocated.
        let kept = try { () throws -> [String: Tensor] in
            var kept = [String: Tensor]()
            for p in try PEFTAdapter.load(from: folder.appendingPathComponent("adapter"), into: decoder).parameters {
                let copy = backend.zeros(p.value.shape, .f32, .weights)
                backend.copy(copy, at: 0, from: p.value)
                kept[p.name] = copy
            }
            return kept
        }()
        let rewardLayout = adapterLayout(decoder)
        let policy = try decoder.attachLoRA(lora, seed: seed, frozenLayers: frozenLayers)
        let policyLayout = adapterLayout(decoder)
        let mismatch = rewardLayout.keys.sorted().first { key in
            guard let r = rewardLayout[key], let p = policyLayout[key] else { return true }
            return r.adapter == p.adapter || r.rank != p.rank || r.scale != p.scale
        }
        guard mismatch == nil, rewardLayout.count == policyLayout.count, Set(kept.keys) == Set(policy.parameters.map(\.name)) else {
            throw FrugalError.invalidArgument("the policy's LoRA adapters must have the reward model's layout to share its base (\(mismatch.map { "projection \($0) differs" } ?? "the adapted projections differ")): use the reward run's --lora-rank, --lora-alpha, --lora-targets and --freeze-layers")
        }
        let slots = policy.parameters.map { p in
            (live: p.value, reward: kept[p.name]!, stash: backend.zeros(p.value.shape, .f32, .workspace))
        }
        return (SharedBaseRewardModel(decoder: decoder, head: head, backend: backend, slots: slots), policy)
    }

    init(decoder: Decoder, head: ValueHead, backend: TrainingBackend, slots: [(live: Tensor, reward: Tensor, stash: Tensor)]) {
        self.decoder = decoder
        self.head = head
        self.backend = backend
        self.slots = slots
    }

    /// The reward of each sequence: the head at its last token, with the reward model's
    /// adapters in place (no gradients); the policy's adapters are back when it returns.
    public func scores(_ sequences: [TokenizedExample], padTokenID: Int32 = 0, batchSize: Int = 8) -> [Float] {
        for slot in slots {
            backend.copy(slot.stash, at: 0, from: slot.live)
            backend.copy(slot.live, at: 0, from: slot.reward)
        }
        defer { for slot in slots { backend.copy(slot.live, at: 0, from: slot.stash) } }
        return RewardModelTrainer.scores(sequences, decoder: decoder, head: head, padTokenID: padTokenID, batchSize: batchSize)
    }

    /// The attached adapters by "block.role": which object, its rank and scale.
    private static func adapterLayout(_ decoder: Decoder) -> [String: (adapter: ObjectIdentifier, rank: Int, scale: Float)] {
        var layout = [String: (adapter: ObjectIdentifier, rank: Int, scale: Float)]()
        for (index, block) in decoder.weights.blocks.enumerated() {
            for role in ProjectionRole.allCases {
                if let adapter = block[role]?.lora {
                    layout["\(index).\(role.rawValue)"] = (ObjectIdentifier(adapter), adapter.rank, adapter.scale)
                }
            }
        }
        return layout
    }
}
