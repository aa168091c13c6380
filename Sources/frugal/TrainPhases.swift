// `frugal train --phase reward|dpo|ppo`: the phases after SFT — a reward model, DPO, and RLHF
// with PPO — on preference data, measured like SFT (time, memory by category, energy, --result).
import ArgumentParser
import Foundation
import FrugalCore
import FrugalCPU
import FrugalFormats
import FrugalMeasure
import FrugalModels
import FrugalTraining

/// The options of the phases beyond SFT.
struct PhaseOptions: ParsableArguments {
    @Option(help: ArgumentHelp("sft, reward (a reward model on preference pairs), dpo, or ppo (RLHF against --reward-model).",
                               valueName: "phase"))
    var phase = "sft"
    @Option(name: .customLong("held-out"), help: "Preference pairs (reward, dpo) or prompts (ppo) held out for evaluation.")
    var heldOut = 32
    @Option(name: .customLong("eval-every"), help: "Evaluate on the held-out data every N steps (0 = before and after only).")
    var evalEvery = 0
    @Option(help: "DPO's beta.") var beta = 0.1
    @Option(name: .customLong("reward-model"), help: "PPO: the --output folder of a --phase reward run (adapter/, value_head.safetensors).")
    var rewardModel: String?
    @Option(help: "PPO: prompts per rollout batch.") var rollouts = 4
    @Option(name: .customLong("max-new-tokens"), help: "PPO: most tokens of a reply.") var maxNewTokens = 32
    @Option(name: .customLong("ppo-epochs"), help: "PPO: updates over each rollout batch.") var ppoEpochs = 2
    @Option(name: .customLong("kl-coef"), help: "PPO: weight of the per-token KL penalty against the reference.")
    var klCoefficient = 0.05
    @Option(help: "PPO: sampling temperature of the rollouts.") var temperature: Float = 1

    func validate() throws {
        guard ["sft", "reward", "dpo", "ppo"].contains(phase) else {
            throw ValidationError("--phase must be sft, reward, dpo or ppo, not '\(phase)'")
        }
        guard beta > 0 else { throw ValidationError("--beta must be positive") }
        guard rollouts > 0, maxNewTokens > 0, ppoEpochs > 0 else {
            throw ValidationError("--rollouts, --max-new-tokens and --ppo-epochs must be positive")
        }
        if phase == "ppo" && rewardModel == nil { throw ValidationError("--phase ppo needs --reward-model (a --phase reward run's --output)") }
    }
}

extension Frugal.Train {
    /// Runs `--phase reward`, `dpo` or `ppo`: trains, evaluates on held-out data before and after,
    /// saves the adapter (and head), and reports time, peak memory by category and energy.
    /// Checkpoints as SFT does: every `--checkpoint-every` steps, at the end, and on Ctrl-C
    /// (exit 130); `--resume` continues from the latest.
    func runPhase() throws {
        let phase = phases.phase
        guard let data else { throw failure("--phase \(phase) needs --data: preference pairs (ShareGPT conversations + chosen + rejected, or prompt/chosen/rejected JSON lines)") }
        let files = try withCleanErrors { try ModelFiles(path: model.path) }
        var configuration = try withCleanErrors { try trainingConfiguration() }
        configuration.steps = steps ?? 50
        if phase != "reward", case .full = configuration.method {
            throw failure("--phase \(phase) trains LoRA adapters (its reference is the base with them switched off): use --method lora")
        }
        let run = try setUp(files, configuration)
        defer { try? run.powerCap?.restore() }
        let (compute, backend, governor, decoder, session) = (run.compute, run.compute.backend, run.governor, run.decoder, run.session)
        guard let template = session.template else { throw failure("the model has no chat template to render preference pairs with") }
        var pairs = try withCleanErrors { try PreferenceDataset(contentsOf: data).pairs }
        if let limit { pairs = Array(pairs.prefix(limit)) }
        let (trainingPairs, heldOutPairs) = PhaseData.split(pairs, heldOut: phases.heldOut, seed: seed)
        let pairTokenizer = PreferenceTokenizer(tokenizer: session.tokenizer, template: template,
                                                defaultSystemPrompt: session.defaultSystemPrompt, maxLength: maxLength)
        let pad = session.tokenizer.eosID ?? 0
        let directory = URL(fileURLWithPath: output)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let adapterFolder = directory.appendingPathComponent("adapter")

        // Each phase gives: a step, its trainer for checkpoints, an evaluation on the held-out
        // data, and what to save.
        let step: () throws -> PhaseEvent
        let isFinished: () -> Bool
        let trainer: any Checkpointable
        let evaluate: () -> [String: Double]
        let save: () throws -> Void
        var description = ""
        switch phase {
        case "reward":
            let training = try withCleanErrors { try pairTokenizer.tokenize(trainingPairs) }
            let heldOut = try withCleanErrors { try pairTokenizer.tokenize(heldOutPairs) }
            let parameters = try attachTrainable(decoder, configuration)
            let head = ValueHead(backend: backend, width: decoder.weights.head.shape.last,
                                 dtype: configuration.precision.createdDType)
            let reward = try withCleanErrors {
                try RewardModelTrainer(decoder: decoder, parameters: parameters, head: head, configuration: configuration,
                                       pairs: training, padTokenID: pad)
            }
            (step, isFinished, trainer) = (reward.trainStep, { reward.isFinished }, reward)
            evaluate = {
                let e = reward.evaluate(heldOut, batchSize: batch)
                return ["accuracy": e.accuracy, "loss": e.loss, "margin": e.margin]
            }
            save = {
                try head.save(to: directory.appendingPathComponent(ValueHead.fileName))
                if case .lora = configuration.method {
                    try PEFTAdapter.export(decoder: decoder, parameters: parameters, baseModel: files.path, to: adapterFolder)
                }
            }
            description = "a reward model (value head + \(parameters.count + head.parameters.count) parameters) on \(training.count) pairs"
        case "dpo":
            let training = try withCleanErrors { try pairTokenizer.tokenize(trainingPairs) }
            let heldOut = try withCleanErrors { try pairTokenizer.tokenize(heldOutPairs) }
            let parameters = try attachTrainable(decoder, configuration)
            let dpo = try withCleanErrors {
                try DPOTrainer(decoder: decoder, parameters: parameters, configuration: configuration, pairs: training,
                               beta: phases.beta, padTokenID: pad)
            }
            (step, isFinished, trainer) = (dpo.trainStep, { dpo.isFinished }, dpo)
            evaluate = {
                let e = dpo.evaluate(heldOut, batchSize: batch)
                return ["loss": e.loss, "accuracy": e.accuracy, "margin": e.margin, "chosen_reward": e.chosenReward,
                        "rejected_reward": e.rejectedReward]
            }
            save = { try PEFTAdapter.export(decoder: decoder, parameters: parameters, baseModel: files.path, to: adapterFolder) }
            description = "DPO (β \(phases.beta)) on \(training.count) pairs, \(parameters.count) parameters"
        default:  // ppo
            guard case let .lora(lora) = configuration.method else { throw failure("--phase ppo trains LoRA adapters") }
            let (reward, policy) = try withCleanErrors {
                try SharedBaseRewardModel.load(from: URL(fileURLWithPath: phases.rewardModel!), decoder: decoder, policy: lora,
                                               seed: seed, frozenLayers: configuration.frozenLayers)
            }
            var settings = PPOSettings()
            settings.rollouts = phases.rollouts
            settings.maxNewTokens = phases.maxNewTokens
            settings.epochs = phases.ppoEpochs
            settings.klCoefficient = phases.klCoefficient
            settings.temperature = phases.temperature
            settings.stopTokens = session.stopTokens
            // Prompts keep their last tokens, leaving room for the reply.
            let room = max(maxLength - settings.maxNewTokens, 1)
            let prompt = { (pair: PreferencePair) in Array(pairTokenizer.promptTokens(pair.prompt).suffix(room)) }
            let heldOut = heldOutPairs.map(prompt)
            let critic = ValueHead(backend: backend, width: decoder.weights.head.shape.last,
                                   dtype: configuration.precision.createdDType)
            let ppo = try withCleanErrors {
                try PPOTrainer(decoder: decoder, parameters: policy, critic: critic, rewardModel: reward,
                               configuration: configuration, settings: settings, prompts: trainingPairs.map(prompt),
                               padTokenID: pad)
            }
            (step, isFinished, trainer) = (ppo.trainStep, { ppo.isFinished }, ppo)
            evaluate = {
                let e = ppo.evaluate(heldOut, seed: seed)
                return ["reward": e.reward, "kl": e.kl, "length": e.length]
            }
            save = {
                try PEFTAdapter.export(decoder: decoder, parameters: policy, baseModel: files.path, to: adapterFolder)
                try critic.save(to: directory.appendingPathComponent("critic_" + ValueHead.fileName))
            }
            description = "PPO against \(phases.rewardModel!) on \(trainingPairs.count) prompts, \(settings.rollouts) rollouts × \(settings.epochs) epochs per step, \(policy.count + critic.parameters.count) parameters"
        }
        print("training \(description), \(configuration.steps) steps, \(configuration.precision.rawValue)\(checkpointing ? ", checkpointing" : "")")
        if resume {
            guard let latest = Checkpoint.latest(in: directory) else { throw failure("no checkpoint to resume in \(output)") }
            try withCleanErrors { try Checkpoint.restore(trainer, from: latest) }
            print("resumed from \(latest.path) at step \(trainer.step)")
        }

        let evaluationStarted = ContinuousClock.now
        let before = evaluate()
        print("before: " + describe(before) + String(format: "  (held-out, %.1f s)", (ContinuousClock.now - evaluationStarted).inSeconds))
        let metricsLog = try MetricsLog(directory: directory, append: resume)
        let interrupt = InterruptFlag()
        let meter = compute.energyMeter?.start()
        var progress = ProgressLine(total: configuration.steps, startStep: trainer.step)
        var losses = [Double](), tokens = 0, phaseSeconds: [String: Double]?
        var firstFigures: [String: Double]?, lastFigures: [String: Double]?
        let loopStarted = ContinuousClock.now
        while !isFinished() {
            switch try withCleanErrors({ try step() }) {
            case let .step(metrics, figures):
                losses.append(metrics.loss)
                tokens += metrics.tokens
                if let step = metrics.phaseSeconds { phaseSeconds = (phaseSeconds ?? [:]).merging(step, uniquingKeysWith: +) }
                firstFigures = firstFigures ?? figures
                lastFigures = figures
                progress.update(metrics)
                try metricsLog.append(metrics, figures: figures)
                governor?.pace()
                let every = phases.evalEvery
                if every > 0 && metrics.step % every == 0 && metrics.step < configuration.steps {
                    progress.note("step \(metrics.step): batch " + describe(figures) + " | held-out " + describe(evaluate()))
                }
            case let .skippedStep(step, scale):
                progress.note("step \(step): fp16 gradients overflowed, skipped; loss scale now \(scale)")
            }
            try interrupt.checkpointIfDue(trainer, step: trainer.step, every: checkpointEvery, in: directory, progress: &progress)
        }
        progress.finish()
        if let governor { print(PowerOptions.summary(governor)) }
        let loopTime = ContinuousClock.now - loopStarted
        let energy = meter?.stop()
        let final = try withCleanErrors { try Checkpoint.save(trainer, in: directory) }
        print("checkpoint: \(final.path)")
        let after = evaluate()
        try withCleanErrors { try save() }
        print("saved to \(directory.path)")

        let memory = backend.ledger.snapshot
        print("after:  " + describe(after))
        if let first = firstFigures, let last = lastFigures {
            print("training batches: first " + describe(first) + " → last " + describe(last))
        }
        if let first = losses.first, let last = losses.last {
            print(String(format: "loss %.4f → %.4f over %d steps, %.1f s (%.1f s/step)", first, last, losses.count,
                         loopTime.inSeconds, loopTime.inSeconds / Double(max(losses.count, 1))))
        }
        print("peak memory by category: " + MemoryCategory.allCases.map { "\($0.rawValue) \(formatBytes(memory.peak[$0, default: 0]))" }.joined(separator: ", ") + " (total peak \(formatBytes(memory.peakTotal)))")
        if let energy { print(String(format: "energy %.1f J (%@)", energy.joules, energy.meter)) }
        if let result {
            var settings = settings(configuration)
            settings["phase"] = phase
            if phase == "dpo" { settings["beta"] = "\(phases.beta)" }
            var run = RunResult(name: "train", device: compute.description,
                                command: CommandLine.arguments.joined(separator: " "), settings: settings)
            run.steps = losses.count
            run.tokens = tokens
            run.seconds = loopTime.inSeconds
            run.tokensPerSecond = run.seconds! > 0 ? Double(tokens) / run.seconds! : nil
            run.record(memory: memory)
            run.record(energy: energy)
            run.phaseSeconds = phaseSeconds
            run.lossFirst = losses.first
            run.lossLast = losses.last
            try run.write(to: URL(fileURLWithPath: result))
        }
    }

    /// The configured trainable set: LoRA adapters, or every weight.
    private func attachTrainable(_ decoder: Decoder, _ configuration: TrainingConfiguration) throws -> TrainableParameters {
        try withCleanErrors {
            switch configuration.method {
            case let .lora(lora):
                try decoder.attachLoRA(lora, seed: seed, frozenLayers: configuration.frozenLayers,
                                       dtype: configuration.precision.createdDType)
            case .full: try decoder.allWeights(frozenLayers: configuration.frozenLayers)
            }
        }
    }

    private func describe(_ figures: [String: Double]) -> String {
        figures.sorted { $0.key < $1.key }.map { String(format: "%@ %.4g", $0.key, $0.value) }.joined(separator: ", ")
    }
}

