// PhaseTests: the reward-model, DPO and PPO phases on the CPU with the tiny llama3 fixture:
// preference data, losses against hand-computed values, the reference being the adapter-free
// base, gradients against finite differences, and short runs moving the metrics the right way.

import Foundation
import FrugalCore
import FrugalCPU
import FrugalFormats
@testable import FrugalModels
@testable import FrugalTraining
import XCTest

final class PhaseTests: XCTestCase {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let llama3 = repository.appendingPathComponent("Tests/FrugalModelsTests/Fixtures/models/llama3").path
    static let lora = LoRAConfiguration(rank: 4, alpha: 8, dropout: 0, targets: ["all-linear"])

    /// A fresh fixture decoder on its own CPU backend.
    func decoder() throws -> Decoder {
        try ModelFiles(path: Self.llama3).decoder(on: CPUBackend())
    }

    /// A fixture decoder with LoRA on every projection; `B` drawn small and nonzero when
    /// `perturbed`, so that the adapters change the model.
    func adaptedDecoder(perturbed: Bool = true, seed: UInt64 = 3) throws -> (Decoder, TrainableParameters) {
        let decoder = try decoder()
        let parameters = try decoder.attachLoRA(Self.lora, seed: seed)
        if perturbed {
            var random = SplitMix64(seed: seed)
            for p in parameters.parameters where p.name.hasSuffix("lora_B.weight") {
                let values = p.value.floats
                for i in values.indices { values[i] = (random.nextUniform() - 0.5) * 0.2 }
            }
        }
        return (decoder, parameters)
    }

    /// Synthetic pairs: a prompt of ids 10..<100, then a reply of 2–5 ids from `chosen`
    /// (default 100..<108) or `rejected` (default 150..<158), each ending with id 2 (an
    /// end-of-turn marker) when `endMarker`.
    static func syntheticPairs(_ count: Int, seed: UInt64, chosen: Range<Int32> = 100..<108,
                               rejected: Range<Int32> = 150..<158, endMarker: Bool = true) -> [TokenizedPair] {
        var random = SplitMix64(seed: seed)
        func draw(_ range: Range<Int32>) -> Int32 { range.lowerBound + Int32(random.next() % UInt64(range.count)) }
        return (0..<count).map { _ in
            let prompt = (0..<(3 + Int(random.next() % 4))).map { _ in draw(10..<100) }
            func sequence(_ range: Range<Int32>) -> TokenizedExample {
                let reply = (0..<(2 + Int(random.next() % 4))).map { _ in draw(range) } + (endMarker ? [2] : [])
                return TokenizedExample(tokens: prompt + reply, trained: Array(repeating: false, count: prompt.count)
                                            + Array(repeating: true, count: reply.count))
            }
            return TokenizedPair(chosen: sequence(chosen), rejected: sequence(rejected), promptLength: prompt.count)
        }
    }

    static func configuration(steps: Int, microBatch: Int = 4, learningRate: Float = 1e-2) -> TrainingConfiguration {
        var c = TrainingConfiguration()
        c.method = .lora(lora)
        c.steps = steps
        c.microBatch = microBatch
        c.learningRate = learningRate
        c.schedule = .constant
        c.maxGradientNorm = 0
        c.seed = 7
        return c
    }

    /// Central difference of `loss` w.r.t. value `index` of `tensor` (f32, CPU).
    func finiteDifference(_ tensor: Tensor, _ index: Int, step: Float = 1e-2, _ loss: () -> Double) -> Double {
        let values = tensor.floats, saved = values[index]
        values[index] = saved + step
        let up = loss()
        values[index] = saved - step
        let down = loss()
        values[index] = saved
        return (up - down) / Double(2 * step)
    }

    /// The largest gradient value of each adapter whose name contains one of `names`, against the
    /// central difference of `loss` (the gradient must be non-negligible, and within 3%).
    func assertAdapterGradientsMatch(_ parameters: TrainableParameters, names: [String], _ loss: () -> Double,
                                     file: StaticString = #filePath, line: UInt = #line) {
        for p in parameters.parameters where names.contains(where: { p.name.contains($0) }) {
            let index = largest(p.gradient)
            let analytic = Double(p.gradient.floats[index])
            let numeric = finiteDifference(p.value, index, loss)
            XCTAssertGreaterThan(abs(analytic), 1e-4, p.name, file: file, line: line)
            XCTAssertEqual(analytic, numeric, accuracy: 0.03 * abs(numeric) + 1e-5, "\(p.name)[\(index)]", file: file, line: line)
        }
    }

    /// Index of the largest |value| of a tensor, where a gradient check is most telling.
    func largest(_ tensor: Tensor) -> Int {
        let values = Array(tensor.floats)
        return values.indices.max { abs(values[$0]) < abs(values[$1]) }!
    }

    // MARK: - Preference data

    func temporaryFile(_ name: String, _ text: String) throws -> String {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("frugal-phase-\(UUID().uuidString)-\(name)")
        try text.write(to: url, atomically: true, encoding: .utf8)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url.path
    }

    func testReadsShareGPTAndPromptChosenRejectedRecords() throws {
        let shareGPT = try temporaryFile("pairs.json", """
        [
          {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi?"}],
           "chosen": {"from": "gpt", "value": "Hello."}, "rejected": {"from": "gpt", "value": "Go away."}}
        ]
        """)
        let pairs = try PreferenceDataset(contentsOf: shareGPT).pairs
        XCTAssertEqual(pairs, [PreferencePair(prompt: [ChatMessage(role: "system", content: "Be brief."),
                                                       ChatMessage(role: "user", content: "Hi?")],
                                              chosen: "Hello.", rejected: "Go away.")])
        let lines = try temporaryFile("pairs.jsonl", """
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"}

        {"prompt": "Sky?", "chosen": "Blue", "rejected": "Green"}
        """)
        let jsonl = try PreferenceDataset(contentsOf: lines).pairs
        XCTAssertEqual(jsonl.map(\.chosen), ["4", "Blue"])
        XCTAssertEqual(jsonl[1].prompt, [ChatMessage(role: "user", content: "Sky?")])
    }

    func testBadPreferenceRecordNamesFileAndLine() throws {
        let path = try temporaryFile("bad.jsonl", """
        {"prompt": "a", "chosen": "b", "rejected": "c"}
        {"prompt": "a", "chosen": "b"}
        """)
        XCTAssertThrowsError(try PreferenceDataset(contentsOf: path)) { error in
            XCTAssertEqual(error as? FrugalError, .malformedFile(path: path, problem: "line 2: missing field 'rejected'"))
        }
        let ending = try temporaryFile("ending.json", """
        [{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}],
          "chosen": "c", "rejected": "d"}]
        """)
        XCTAssertThrowsError(try PreferenceDataset(contentsOf: ending)) { error in
            XCTAssertEqual(error as? FrugalError, .malformedFile(
                path: ending, problem: "line 1: the conversation must end with the user's turn, which the replies answer"))
        }
    }

    func testReadsTheSharedDPODemo() throws {
        let path = Self.repository.deletingLastPathComponent().appendingPathComponent("shared/data/dpo_en_demo.json").path
        guard FileManager.default.fileExists(atPath: path) else { throw XCTSkip("\(path) not found (no ../shared)") }
        let pairs = try PreferenceDataset(contentsOf: path).pairs
        XCTAssertEqual(pairs.count, 300)
        XCTAssertTrue(pairs.allSatisfy { $0.prompt.last?.role == "user" && !$0.chosen.isEmpty && !$0.rejected.isEmpty })
    }

    /// Only the reply's tokens are targets; each sequence is the rendered conversation and ends
    /// with the end-of-turn marker; truncation keeps the prompt's end and cuts the reply.
    func testTokenizedPairTrainsOnlyTheReply() throws {
        let tokenizer = try Tokenizer(tokenizerJSON: Self.repository.appendingPathComponent(
            "Tests/FrugalFormatsTests/Fixtures/tokenizers/bytelevel_gpt2.json"))
        let pair = PreferencePair(prompt: [ChatMessage(role: "user", content: "Name a color.")], chosen: "Blue.",
                                  rejected: "I will not.")
        let tokenized = try PreferenceTokenizer(tokenizer: tokenizer, template: .chatML).tokenize(pair)
        let messages = pair.prompt + [ChatMessage(role: "assistant", content: "Blue.")]
        let rendered = ChatTemplate.chatML.render(messages, addGenerationPrompt: false)
        XCTAssertEqual(tokenizer.decode(tokenized.chosen.tokens) + "\n", rendered)
        let end = try XCTUnwrap(tokenizer.tokenID(for: "<|im_end|>"))
        XCTAssertEqual(tokenized.chosen.tokens.last, end)
        XCTAssertEqual(tokenized.rejected.tokens.last, end)
        XCTAssertEqual(tokenized.prompt, Array(tokenized.rejected.tokens.prefix(tokenized.promptLength)))
        XCTAssertEqual(tokenizer.decode(tokenized.prompt),
                       ChatTemplate.chatML.render(pair.prompt, addGenerationPrompt: true))
        for sequence in [tokenized.chosen, tokenized.rejected] {
            let reply = Array(sequence.tokens.dropFirst(tokenized.promptLength))
            // Position t predicts token t + 1: targets from the prompt's last token on.
            XCTAssertEqual(sequence.targets.filter { $0 >= 0 }, reply)
            XCTAssertTrue(sequence.targets.prefix(tokenized.promptLength - 1).allSatisfy { $0 < 0 })
        }
        let short = try PreferenceTokenizer(tokenizer: tokenizer, template: .chatML, maxLength: 8).tokenize(pair)
        XCTAssertLessThanOrEqual(short.chosen.tokens.count, 8)
        XCTAssertEqual(short.promptLength, 4)
        XCTAssertEqual(Array(short.chosen.tokens.prefix(4)), Array(tokenized.prompt.suffix(4)))
    }

    // MARK: - Losses by hand

    func testPairwiseLossByHand() {
        let (loss, dChosen) = RewardModelTrainer.pairwiseLoss(chosen: 1, rejected: 0)
        XCTAssertEqual(loss, log(1 + exp(-1)), accuracy: 1e-12)  // 0.313262
        XCTAssertEqual(dChosen, -1 / (1 + exp(1)), accuracy: 1e-12)  // −σ(−1) = −0.268941
        XCTAssertEqual(RewardModelTrainer.pairwiseLoss(chosen: 0, rejected: 0).loss, log(2), accuracy: 1e-12)
        // Far apart: no overflow, the loss goes to 0 or to the difference.
        XCTAssertEqual(RewardModelTrainer.pairwiseLoss(chosen: 800, rejected: 0).loss, 0, accuracy: 1e-12)
        XCTAssertEqual(RewardModelTrainer.pairwiseLoss(chosen: 0, rejected: 800).loss, 800, accuracy: 1e-9)
    }

    func testDPOLossByHand() {
        // z = 0.1 · ((−10 − (−11)) − (−12 − (−11))) = 0.2
        let pair = DPOLoss(policyChosen: -10, policyRejected: -12, referenceChosen: -11, referenceRejected: -11, beta: 0.1)
        XCTAssertEqual(pair.loss, log(1 + exp(-0.2)), accuracy: 1e-12)  // 0.598139
        XCTAssertEqual(pair.dPolicyChosen, -0.1 / (1 + exp(0.2)), accuracy: 1e-12)  // −0.045017
        XCTAssertEqual(pair.chosenReward, 0.1, accuracy: 1e-12)
        XCTAssertEqual(pair.rejectedReward, -0.1, accuracy: 1e-12)
        XCTAssertEqual(pair.margin, 0.2, accuracy: 1e-12)
        // The policy equal to the reference: log 2, whatever β.
        XCTAssertEqual(DPOLoss(policyChosen: -3, policyRejected: -4, referenceChosen: -3, referenceRejected: -4,
                               beta: 0.5).loss, log(2), accuracy: 1e-12)
    }

    // MARK: - The reference is the base

    func testReferenceLogProbabilitiesEqualTheBaseWithoutLoRA() throws {
        let (decoder, parameters) = try adaptedDecoder()
        let pairs = Self.syntheticPairs(3, seed: 1)
        let trainer = try DPOTrainer(decoder: decoder, parameters: parameters, configuration: Self.configuration(steps: 1),
                                     pairs: pairs)
        let sequences = SequenceBatch(pairs.map(\.chosen) + pairs.map(\.rejected))
        let reference = trainer.referenceLogProbabilities(sequences)
        let base = try self.decoder()
        let fresh = LogProbabilities.perSequence(sequences.hiddenStates(base), head: base.weights.head, sequences,
                                                 backend: base.backend as! TrainingBackend)
        for (r, f) in zip(reference, fresh) { XCTAssertEqual(r, f, accuracy: 1e-9 * max(1, abs(f))) }
        // With the adapters back on, the policy differs, and the reference is unchanged.
        let policy = trainer.policyLogProbabilities(sequences)
        XCTAssertGreaterThan(zip(policy, fresh).map { abs($0 - $1) }.max()!, 1e-3)
        XCTAssertEqual(trainer.referenceLogProbabilities(sequences), reference)
        // Summed log-probabilities are those of the fused cross-entropy over the batch.
        XCTAssertEqual(fresh.reduce(0, +), -base.loss(sequences.batch), accuracy: 1e-6 * abs(fresh.reduce(0, +)))
    }

    // MARK: - Gradients against finite differences

    func testRewardGradientsMatchFiniteDifferences() throws {
        let (decoder, parameters) = try adaptedDecoder()
        let backend = decoder.backend as! TrainingBackend
        var random = SplitMix64(seed: 9)
        let head = ValueHead(backend: backend, width: decoder.configuration.hiddenSize,
                             values: (0..<decoder.configuration.hiddenSize).map { _ in random.nextUniform() - 0.5 })
        let pairs = Self.syntheticPairs(2, seed: 2)
        let trainer = try RewardModelTrainer(decoder: decoder, parameters: parameters, head: head,
                                             configuration: Self.configuration(steps: 1), pairs: pairs)
        var totals = PairwiseEvaluation(pairs: 2, accuracy: 0, loss: 0, margin: 0)
        trainer.accumulateGradients(pairs, scale: 0.5, into: &totals)
        totals.average()
        let loss = { trainer.evaluate(pairs).loss }
        XCTAssertEqual(totals.loss, loss(), accuracy: 1e-6)

        let headGradient = head.parameters.parameters[0].gradient
        for index in [largest(headGradient), 0] {
            let numeric = finiteDifference(head.weight, index, loss)
            XCTAssertEqual(Double(headGradient.floats[index]), numeric, accuracy: 2e-3 * max(1, abs(numeric)),
                           "v_head.weight[\(index)]")
        }
        assertAdapterGradientsMatch(parameters, names: ["layers.1.self_attn.v_proj", "layers.0.mlp.up"], loss)

        // The head's backward reaches the hidden states at the rows given a gradient only.
        let hidden = backend.zeros([5, decoder.configuration.hiddenSize], .f32, .activations)
        for i in hidden.floats.indices { hidden.floats[i] = Float(i % 7) - 3 }
        let dHidden = backend.zeros(hidden.shape, .f32, .activations)
        head.backward(dValues: [0, 2, 0, 0, -1], hidden: hidden, dHidden: dHidden)
        let width = decoder.configuration.hiddenSize, w = Array(head.weight.floats)
        for row in 0..<5 {
            let expected = w.map { $0 * [0, 2, 0, 0, -1][row] }
            XCTAssertEqual(Array(dHidden.floats[(row * width)..<((row + 1) * width)]), expected, "row \(row)")
        }
    }

    func testDPOGradientMatchesFiniteDifferences() throws {
        let (decoder, parameters) = try adaptedDecoder()
        let pairs = Self.syntheticPairs(2, seed: 4)
        let trainer = try DPOTrainer(decoder: decoder, parameters: parameters, configuration: Self.configuration(steps: 1),
                                     pairs: pairs, beta: 0.5)
        var totals = DPOEvaluation(pairs: 2, loss: 0, accuracy: 0, margin: 0, chosenReward: 0, rejectedReward: 0)
        trainer.accumulateGradients(pairs, scale: 0.5, into: &totals)
        totals.average()
        let loss = { trainer.evaluate(pairs).loss }
        XCTAssertEqual(totals.loss, loss(), accuracy: 1e-6)
        XCTAssertNotEqual(totals.margin, 0)
        assertAdapterGradientsMatch(parameters, names: ["layers.0.self_attn.q_proj", "layers.1.mlp.down"], loss)
    }

    // MARK: - Short runs

    func testShortRewardRunRaisesHeldOutAccuracy() throws {
        let (decoder, parameters) = try adaptedDecoder(perturbed: false)
        let (training, heldOut) = PhaseData.split(Self.syntheticPairs(48, seed: 5), heldOut: 16, seed: 1)
        let head = ValueHead(backend: decoder.backend as! TrainingBackend, width: decoder.configuration.hiddenSize)
        let trainer = try RewardModelTrainer(decoder: decoder, parameters: parameters, head: head,
                                             configuration: Self.configuration(steps: 40), pairs: training)
        let before = trainer.evaluate(heldOut)
        XCTAssertEqual(before.accuracy, 0.5)  // a zero head ties every pair
        var losses = [Double]()
        while !trainer.isFinished {
            guard case let .step(metrics, figures) = try trainer.trainStep() else { return XCTFail("skipped step") }
            losses.append(metrics.loss)
            XCTAssertNotNil(figures["accuracy"])
            XCTAssertGreaterThan(metrics.memory.peak[.gradients] ?? 0, 0)
            XCTAssertEqual(Set(metrics.phaseSeconds?.keys.map { $0 } ?? []), ["forward", "backward", "optimizer"])
        }
        let after = trainer.evaluate(heldOut)
        XCTAssertGreaterThan(after.accuracy, 0.9, "held-out accuracy \(before.accuracy) → \(after.accuracy)")
        XCTAssertGreaterThan(after.margin, before.margin)
        XCTAssertLessThan(losses.suffix(3).reduce(0, +), losses.prefix(3).reduce(0, +))
    }

    func testShortDPORunRaisesMarginAndAccuracy() throws {
        let (decoder, parameters) = try adaptedDecoder(perturbed: false)
        let (training, heldOut) = PhaseData.split(Self.syntheticPairs(48, seed: 6), heldOut: 16, seed: 1)
        let trainer = try DPOTrainer(decoder: decoder, parameters: parameters,
                                     configuration: Self.configuration(steps: 40), pairs: training, beta: 0.1)
        let before = trainer.evaluate(heldOut)
        XCTAssertEqual(before.margin, 0, accuracy: 1e-9)  // B = 0: the policy is the reference
        XCTAssertEqual(before.loss, log(2), accuracy: 1e-9)
        while !trainer.isFinished {
            guard case let .step(metrics, _) = try trainer.trainStep() else { return XCTFail("skipped step") }
            XCTAssertEqual(Set(metrics.phaseSeconds?.keys.map { $0 } ?? []), ["forward", "backward", "optimizer"])
        }
        let after = trainer.evaluate(heldOut)
        XCTAssertGreaterThan(after.margin, 0.5, "held-out margin \(before.margin) → \(after.margin)")
        XCTAssertGreaterThan(after.accuracy, 0.9)
        XCTAssertLessThan(after.loss, before.loss)
    }

    // MARK: - PPO

    func testGAEByHand() {
        // δ = [0 + 0.2 − 0.5, 0 + 0.1 − 0.2, 1 − 0.1] = [−0.3, −0.1, 0.9]; A_t = δ_t + 0.95·A_{t+1}
        let (advantages, returns) = PPOTrainer.advantages(rewards: [0, 0, 1], values: [0.5, 0.2, 0.1], gamma: 1, lambda: 0.95)
        for (a, e) in zip(advantages, [0.41725, 0.755, 0.9]) { XCTAssertEqual(a, e, accuracy: 1e-12) }
        for (r, e) in zip(returns, [0.91725, 0.955, 1.0]) { XCTAssertEqual(r, e, accuracy: 1e-12) }
        let discounted = PPOTrainer.advantages(rewards: [0, 1], values: [0, 0], gamma: 0.5, lambda: 1).advantages
        XCTAssertEqual(discounted, [0.5, 1])
    }

    func testClippedLossesByHand() {
        let ratio = log(1.5)  // ρ = 1.5, beyond 1 + ε
        // A > 0: the clipped term −1.2 holds, no gradient; A < 0: the unclipped 1.5 holds, d = −A·ρ.
        let up = PPOTrainer.policyLoss(logProbability: ratio, old: 0, advantage: 1, clip: 0.2)
        XCTAssertEqual(up.loss, -1.2, accuracy: 1e-12)
        XCTAssertEqual(up.dLogProbability, 0)
        let down = PPOTrainer.policyLoss(logProbability: ratio, old: 0, advantage: -1, clip: 0.2)
        XCTAssertEqual(down.loss, 1.5, accuracy: 1e-12)
        XCTAssertEqual(down.dLogProbability, 1.5, accuracy: 1e-12)
        let inside = PPOTrainer.policyLoss(logProbability: -1, old: -1, advantage: 2, clip: 0.2)
        XCTAssertEqual(inside.loss, -2)
        XCTAssertEqual(inside.dLogProbability, -2)
        // V = 1, V_old = 0, R = 0.5: unclipped ½·0.25, clipped V = 0.2 gives ½·0.09: the unclipped holds.
        let value = PPOTrainer.valueLoss(value: 1, old: 0, target: 0.5, clip: 0.2)
        XCTAssertEqual(value.loss, 0.125, accuracy: 1e-12)
        XCTAssertEqual(value.dValue, 0.5, accuracy: 1e-12)
        // V = 1, V_old = 0, R = 2: clipped V = 0.2 is farther (½·3.24): it holds, no gradient.
        let held = PPOTrainer.valueLoss(value: 1, old: 0, target: 2, clip: 0.2)
        XCTAssertEqual(held.loss, 1.62, accuracy: 1e-12)
        XCTAssertEqual(held.dValue, 0)
    }

    /// Trains a reward model and saves it as the reward phase does: it learns to prefer replies
    /// whose tokens are among 100..<108 to replies of any other tokens (no end marker, so that
    /// it scores whatever reply a policy samples).
    func savedRewardModel(steps: Int = 30) throws -> (folder: URL, scores: [Float], sequences: [TokenizedExample]) {
        let (decoder, parameters) = try adaptedDecoder(perturbed: false)
        let head = ValueHead(backend: decoder.backend as! TrainingBackend, width: decoder.configuration.hiddenSize)
        let pairs = Self.syntheticPairs(64, seed: 5, rejected: 108..<256, endMarker: false)
        let trainer = try RewardModelTrainer(decoder: decoder, parameters: parameters, head: head,
                                             configuration: Self.configuration(steps: steps), pairs: pairs)
        while !trainer.isFinished { _ = try trainer.trainStep() }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("frugal-reward-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: folder) }
        try PEFTAdapter.export(decoder: decoder, parameters: parameters, baseModel: Self.llama3,
                               to: folder.appendingPathComponent("adapter"))
        try head.save(to: folder.appendingPathComponent(ValueHead.fileName))
        let sequences = pairs.prefix(4).flatMap { [$0.chosen, $0.rejected] }
        return (folder, trainer.scores(sequences), sequences)
    }

    func testSharedBaseRewardModelScoresAsTrainedAndRestoresThePolicy() throws {
        let saved = try savedRewardModel(steps: 5)
        let decoder = try decoder()
        let (reward, policy) = try SharedBaseRewardModel.load(from: saved.folder, decoder: decoder, policy: Self.lora, seed: 11)
        XCTAssertEqual(policy.count, try adaptedDecoder().1.count)
        let batch = SequenceBatch(saved.sequences)
        let backend = decoder.backend as! TrainingBackend
        let before = LogProbabilities.perToken(batch.hiddenStates(decoder), head: decoder.weights.head,
                                               targets: batch.batch.targets, backend: backend)
        let scores = reward.scores(saved.sequences)
        for (s, e) in zip(scores, saved.scores) { XCTAssertEqual(s, e, accuracy: 1e-5) }
        XCTAssertEqual(LogProbabilities.perToken(batch.hiddenStates(decoder), head: decoder.weights.head,
                                                 targets: batch.batch.targets, backend: backend), before)
        // The base is held once: the reward adapters add two adapter sets, not a model.
        let weights = backend.ledger.snapshot.current[.weights] ?? 0
        let fresh = try self.decoder()
        let base = withExtendedLifetime(fresh) { fresh.backend.ledger.snapshot.current[.weights] ?? 0 }
        XCTAssertEqual(weights, base + policy.parameters.reduce(0) { $0 + $1.value.byteCount })

        var other = Self.lora
        other.rank = 2
        XCTAssertThrowsError(try SharedBaseRewardModel.load(from: saved.folder, decoder: try self.decoder(), policy: other, seed: 1))
        other = Self.lora
        other.targets = ["q", "v"]
        XCTAssertThrowsError(try SharedBaseRewardModel.load(from: saved.folder, decoder: try self.decoder(), policy: other, seed: 1))
    }

    func testPPOGradientMatchesFiniteDifferences() throws {
        let saved = try savedRewardModel(steps: 3)
        let decoder = try decoder()
        let (reward, policy) = try SharedBaseRewardModel.load(from: saved.folder, decoder: decoder, policy: Self.lora, seed: 11)
        var random = SplitMix64(seed: 12)
        for p in policy.parameters where p.name.hasSuffix("lora_B.weight") {
            for i in p.value.floats.indices { p.value.floats[i] = (random.nextUniform() - 0.5) * 0.2 }
        }
        let critic = ValueHead(backend: decoder.backend as! TrainingBackend, width: decoder.configuration.hiddenSize,
                               values: (0..<decoder.configuration.hiddenSize).map { _ in (random.nextUniform() - 0.5) * 0.1 })
        var settings = PPOSettings()
        settings.maxNewTokens = 5
        settings.valueCoefficient = 0.5
        let prompts = Self.syntheticPairs(3, seed: 8).map(\.prompt)
        let trainer = try PPOTrainer(decoder: decoder, parameters: policy, critic: critic, rewardModel: reward,
                                     configuration: Self.configuration(steps: 1), settings: settings, prompts: prompts)
        var rollouts = prompts.map { trainer.generate($0, random: &random) }
        trainer.score(&rollouts)
        // Move the policy away from the rollouts' so that ratios differ from 1, within the clip range.
        for p in policy.parameters where p.name.hasSuffix("lora_A.weight") {
            for i in p.value.floats.indices { p.value.floats[i] *= 1.05 }
        }
        let scale = 1 / Double(rollouts.reduce(0) { $0 + $1.positions.count })
        func loss() -> Double {
            var totals = [String: Double]()
            trainer.accumulateGradients(rollouts, scale: 0, into: &totals)
            return (totals["policy_loss"]! + settings.valueCoefficient * totals["value_loss"]!) * scale
        }
        var totals = [String: Double]()
        policy.zeroGradients()
        critic.parameters.zeroGradients()
        trainer.accumulateGradients(rollouts, scale: scale, into: &totals)
        XCTAssertEqual(totals["clip_fraction"], 0)
        var checked = [(Tensor, Tensor, String)]()
        for p in policy.parameters where p.name.contains("layers.1.self_attn.q_proj") || p.name.contains("layers.0.mlp.gate") {
            checked.append((p.value, p.gradient, p.name))
        }
        checked.append((critic.weight, critic.parameters.parameters[0].gradient, "v_head.weight"))
        let analytic = checked.map { value, gradient, _ in (largest(gradient), gradient) }
            .map { index, gradient in (index, Double(gradient.floats[index])) }
        for ((value, _, name), (index, expected)) in zip(checked, analytic) {
            let numeric = finiteDifference(value, index, step: 3e-3, loss)
            XCTAssertGreaterThan(abs(expected), 1e-5, name)
            XCTAssertEqual(expected, numeric, accuracy: 0.03 * abs(numeric) + 1e-5, "\(name)[\(index)]")
        }
    }

    func testShortPPORunRaisesHeldOutReward() throws {
        let saved = try savedRewardModel()
        let decoder = try decoder()
        let (reward, policy) = try SharedBaseRewardModel.load(from: saved.folder, decoder: decoder, policy: Self.lora, seed: 11)
        let critic = ValueHead(backend: decoder.backend as! TrainingBackend, width: decoder.configuration.hiddenSize)
        var settings = PPOSettings()
        settings.rollouts = 8
        settings.maxNewTokens = 4
        settings.stopTokens = [2]
        settings.klCoefficient = 0.01
        let (training, heldOut) = PhaseData.split(Self.syntheticPairs(40, seed: 9).map(\.prompt), heldOut: 12, seed: 2)
        let trainer = try PPOTrainer(decoder: decoder, parameters: policy, critic: critic, rewardModel: reward,
                                     configuration: Self.configuration(steps: 100, microBatch: 4), settings: settings,
                                     prompts: training)
        let before = trainer.evaluate(heldOut, seed: 3)
        XCTAssertEqual(before.kl, 0, accuracy: 1e-9)  // B = 0: the policy is the reference
        var kl = [Double]()
        while !trainer.isFinished {
            guard case let .step(metrics, figures) = try trainer.trainStep() else { return XCTFail("skipped step") }
            kl.append(figures["kl"]!)
            let phases = try XCTUnwrap(metrics.phaseSeconds)
            XCTAssertEqual(Set(phases.keys), ["rollout", "forward", "backward", "optimizer"])
            XCTAssertLessThanOrEqual(phases.values.reduce(0, +), metrics.seconds)
        }
        let after = trainer.evaluate(heldOut, seed: 3)
        // A clear rise (reward-model logits; the exact amount moves with summation order).
        XCTAssertGreaterThan(after.reward, before.reward + 1, "held-out reward \(before.reward) → \(after.reward)")
        XCTAssertGreaterThan(after.kl, 0)
        XCTAssertGreaterThan(kl.last!, 0)
    }
}
