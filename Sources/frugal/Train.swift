// `frugal train`: fine-tune a model — by default, SmolLM2 learning a small task it can be seen to learn.
import ArgumentParser
import Foundation
import FrugalCore
import FrugalCPU
import FrugalEval
import FrugalFormats
import FrugalModels
import FrugalMeasure
import FrugalTraining
import Yams

extension Frugal {
    struct Train: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Fine-tune a model with LoRA or fully, on the GPU or the CPU.",
            discussion: """
            With no arguments, fine-tunes SmolLM2-135M-Instruct with LoRA to write initials
            ("Write the initials of: Ada King Lovelace" → "A.K.L."), a task Frugal makes,
            and prints exact-match accuracy on held-out names before and after.
              frugal train
              frugal train --data alpaca.json --lora-targets q,k,v --batch 8 --steps 25
              frugal train --method full --precision bf16 --checkpointing --grad-accum 4
              frugal train --device cpu     # the GPU is used when present (auto)
              frugal train --output runs/train --resume     # from the last checkpoint
              frugal train --config run.yaml     # options from YAML (long names)
            Ctrl-C writes a checkpoint and stops; --resume continues exactly.
            `tensorboard --logdir <output>` shows the run as it trains.
            """)

        @OptionGroup var model: ModelOptions
        @OptionGroup var device: DeviceOptions
        @OptionGroup var power: PowerOptions
        @OptionGroup var phases: PhaseOptions
        @Option(help: "Training data: Alpaca .json, .jsonl with messages / conversations / text, or .txt (default: the built-in initials task).")
        var data: String?
        @Option(help: "Data format when the file does not tell: alpaca, messages, sharegpt, text.") var format: String?
        @Flag(name: .customLong("skip-bad-records"), help: "Skip malformed records (counted) instead of stopping.")
        var skipBadRecords = false
        @Option(help: "lora or full.") var method = "lora"
        @Option(name: .customLong("lora-rank")) var loraRank = 16
        @Option(name: .customLong("lora-alpha"), help: "LoRA alpha (default 2 × rank).") var loraAlpha: Float?
        @Option(name: .customLong("lora-dropout")) var loraDropout: Float = 0
        @Option(name: .customLong("lora-targets"), help: "Comma-separated: q,k,v,o,gate,up,down or all-linear.")
        var loraTargets = "q,k,v,o"
        @Flag(name: .customLong("rslora"), help: "Scale LoRA by alpha/√rank (rank-stabilized).") var rsLoRA = false
        @Option(name: .customLong("freeze-layers"), help: "Comma-separated block indices that do not train. With LoRA, freezing the lowest blocks (0,1,…) also saves their activations and backward.")
        var freezeLayers: String?
        @Option(help: "Optimizer steps.") var steps: Int?
        @Option(help: "Sequences per micro-batch.") var batch = 8
        @Option(name: .customLong("grad-accum"), help: "Micro-batches per optimizer step.") var gradAccum = 1
        @Option(name: .customLong("lr"), help: "Peak learning rate.") var learningRate: Float = 2e-3
        @Option(help: "constant, linear or cosine.") var schedule = "cosine"
        @Option(help: "Warm-up steps.") var warmup = 5
        @Option(help: optimizerHelp) var optimizer = "adamw"
        @Option(name: .customLong("weight-decay")) var weightDecay: Float = 0
        @Option(name: .customLong("max-grad-norm"), help: "Clip the global gradient norm (0 = off).") var maxGradNorm: Float = 1
        @Option(help: "fp32, fp16, bf16 or pure-bf16.") var precision = "fp32"
        @Option(help: activationsHelp) var activations: String?
        @Flag(help: "Activation checkpointing: recompute each block in backward.") var checkpointing = false
        @Flag(name: .customLong("fused-step"), help: fusedStepHelp) var fusedStep = false
        @Flag(name: .customLong("offload-optimizer"), help: offloadOptimizerHelp) var offloadOptimizer = false
        @Flag(name: .customLong("offload-activations"), help: offloadActivationsHelp) var offloadActivations = false
        @Flag(name: .customLong("auto-batch"), help: ArgumentHelp(
            "Halve --batch until `frugal plan` predicts the run fits the free memory (or --memory-limit), raising --grad-accum to keep each step's sequences the same."))
        var autoBatch = false
        @Option(name: .customLong("max-length"), help: "Longest sequence in tokens.") var maxLength = 256
        @Flag(help: "Pack several samples per row (no attention across them) instead of padding.") var packing = false
        @Flag(name: .customLong("train-on-prompt"), help: "Also train on prompt tokens.") var trainOnPrompt = false
        @Option(help: "Seed of adapters, dropout and data order.") var seed: UInt64 = 42
        @Option(help: "Folder for checkpoints and the adapter.") var output = "runs/train"
        @Option(name: .customLong("checkpoint-every"), help: "Steps between checkpoints (0 = end and Ctrl-C only).")
        var checkpointEvery = 0
        @Flag(help: "Continue from the latest checkpoint in --output.") var resume = false
        @Option(help: "Use only the first N records of --data.") var limit: Int?
        @Option(help: "Write the run's measured result (time, tokens/s, memory by category, energy) as JSON here.")
        var result: String?
        @Option(help: "A YAML file of options: keys are the long option names (lora-rank: 16, checkpointing: true); the command line wins.")
        var config: String?

        func run() throws {
            if let config {
                try Self.fromYAML(config).run()
                return
            }
            if phases.phase != "sft" {
                guard !offloadActivations else { throw ValidationError("--offload-activations: only the sft phase offloads activations") }
                return try runPhase()  // reward, dpo, ppo: TrainPhases.swift
            }
            let files = try withCleanErrors { try ModelFiles(path: model.path) }
            var configuration = try withCleanErrors { try trainingConfiguration() }
            let task = data == nil ? InitialsTask() : nil
            let examples: [TrainingExample]
            if let data {
                let dataset = try withCleanErrors {
                    try TrainingDataset(contentsOf: data, format: format.flatMap(DataFormat.init(rawValue:)),
                                        skipBadRecords: skipBadRecords)
                }
                if dataset.report.skipped > 0 {
                    print("skipped \(dataset.report.skipped) bad records (lines \(dataset.report.skippedLines.prefix(10).map(String.init).joined(separator: ", ")))")
                }
                examples = limit.map { Array(dataset.examples.prefix($0)) } ?? dataset.examples
            } else {
                examples = task!.trainingExamples
            }
            let run = try setUp(files, configuration)
            defer { try? run.powerCap?.restore() }
            let predictedPeak: Int
            (configuration, predictedPeak) = try fitMemory(configuration, run)
            let (compute, backend, governor, decoder, session) = (run.compute, run.compute.backend, run.governor, run.decoder, run.session)
            let sequences = try withCleanErrors {
                try ExampleTokenizer(tokenizer: session.tokenizer, template: session.template,
                                     defaultSystemPrompt: session.defaultSystemPrompt, maxLength: maxLength,
                                     trainOnPrompt: trainOnPrompt).tokenize(examples)
            }
            let loader = try withCleanErrors {
                try DataLoader(sequences: sequences, batchSize: configuration.microBatch,
                               strategy: packing ? .packing(length: maxLength) : .padding(length: nil),
                               padTokenID: session.tokenizer.eosID ?? 0, shuffle: true, seed: seed)
            }
            if let task { report("before", task, session) }
            let parameters = try withCleanErrors {
                switch configuration.method {
                case let .lora(lora):
                    try decoder.attachLoRA(lora, seed: seed, frozenLayers: configuration.frozenLayers, shareBlockGradients: fusedStep,
                                          dtype: configuration.precision.createdDType)
                case .full: try decoder.allWeights(frozenLayers: configuration.frozenLayers, shareBlockGradients: fusedStep)
                }
            }
            print("training \(formatCount(parameters.count)) parameters (\(describe(configuration.method))) on \(loader.sequenceCount) sequences, \(configuration.steps) steps of \(configuration.microBatch)×\(configuration.gradientAccumulation), \(configuration.precision.rawValue)\(configuration.activationDType == .f32 ? "" : " with \(configuration.activationDType.rawValue) activations")\(checkpointing ? ", checkpointing" : "")")
            let trainer = try withCleanErrors {
                try Trainer(decoder: decoder, parameters: parameters, configuration: configuration, loader: loader)
            }
            let directory = URL(fileURLWithPath: output)
            if resume {
                guard let latest = Checkpoint.latest(in: directory) else {
                    throw failure("no checkpoint to resume in \(output)")
                }
                try withCleanErrors { try Checkpoint.restore(trainer, from: latest) }
                print("resumed from \(latest.path) at step \(trainer.step)")
            }
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let metricsLog = try MetricsLog(directory: directory, append: resume)
            let interrupt = InterruptFlag()
            var progress = ProgressLine(total: configuration.steps, startStep: trainer.step)
            var losses = [(Int, Double)]()
            var trainedTokens = 0
            var phaseSeconds: [String: Double]?
            let loopStarted = ContinuousClock.now
            let energy = compute.energyMeter?.start()
            while !trainer.isFinished {
                let event = try withCleanErrors { try trainer.trainStep() }
                switch event {
                case let .step(metrics):
                    losses.append((metrics.step, metrics.loss))
                    trainedTokens += metrics.tokens
                    if let step = metrics.phaseSeconds { phaseSeconds = (phaseSeconds ?? [:]).merging(step, uniquingKeysWith: +) }
                    progress.update(metrics)
                    try metricsLog.append(metrics)
                    governor?.pace()
                case let .skippedStep(step, scale):
                    progress.note("step \(step): fp16 gradients overflowed, skipped; loss scale now \(scale)")
                case .checkpoint: break
                }
                try interrupt.checkpointIfDue(trainer, step: trainer.step, every: checkpointEvery, in: directory,
                                              progress: &progress)
            }
            progress.finish()
            if let governor { print(PowerOptions.summary(governor)) }
            let loopTime = ContinuousClock.now - loopStarted
            let joules = energy?.stop()
            let final = try withCleanErrors { try Checkpoint.save(trainer, in: directory) }
            print("checkpoint: \(final.path)")
            if case .lora = configuration.method {
                let adapter = directory.appendingPathComponent("adapter")
                try withCleanErrors { try PEFTAdapter.export(decoder: decoder, parameters: parameters, baseModel: files.path, to: adapter) }
                print("PEFT adapter: \(adapter.path)")
            }
            let memory = backend.ledger.snapshot, hostMemory = backend.hostLedger.snapshot
            print("peak memory by category: " + MemoryCategory.allCases.map { "\($0.rawValue) \(formatBytes(memory.peak[$0, default: 0]))" }.joined(separator: ", "))
            if hostMemory.peakTotal > 0 { print("offloaded to host memory, peak: " + describePeaks(hostMemory)) }
            if let first = losses.first, let last = losses.last {
                print(String(format: "loss %.4f (step %d) → %.4f (step %d)", first.1, first.0, last.1, last.0))
            }
            if let result {
                var run = RunResult(name: "train", device: compute.description,
                                    command: CommandLine.arguments.joined(separator: " "), settings: settings(configuration))
                run.steps = losses.count
                run.tokens = trainedTokens
                run.seconds = loopTime.inSeconds
                run.tokensPerSecond = run.seconds! > 0 ? Double(trainedTokens) / run.seconds! : nil
                run.record(memory: memory, host: hostMemory)
                run.predictedPeakBytes = predictedPeak
                run.lossFirst = losses.first?.1
                run.lossLast = losses.last?.1
                run.record(energy: joules)
                run.phaseSeconds = phaseSeconds
                try run.write(to: URL(fileURLWithPath: result))
            }
            if let task { report("after", task, session) }
        }

        /// What every phase starts with: the device, the power cap and budget, the model on it.
        struct RunSetUp {
            let compute: Compute
            let powerCap: PowerCap?
            let governor: PowerGovernor?
            let decoder: Decoder
            let session: ChatSession
        }

        /// Picks the device, applies `--power-cap` and `--power-budget`, and loads the model there.
        func setUp(_ files: ModelFiles, _ configuration: TrainingConfiguration) throws -> RunSetUp {
            let compute = try device.compute(lowPrecisionMatmul: configuration.precision != .fp32)
            print("device: \(compute.description)")
            let powerCap = try power.apply(compute)
            let governor = try power.governor(compute)
            let decoder = try model.decoder(files, on: compute.backend, trainable: configuration.method == .full,
                                         trainableDType: configuration.precision.createdDType)
            return RunSetUp(compute: compute, powerCap: powerCap, governor: governor, decoder: decoder,
                            session: try model.chatSession(files: files, decoder: decoder))
        }

        /// Exact-match accuracy on the task's held-out names, with one sample answer.
        private func report(_ when: String, _ task: InitialsTask, _ session: ChatSession) {
            var correct = 0
            for item in task.test where InitialsTask.isCorrect(session.reply(to: item.prompt, maxTokens: 12).text, item) {
                correct += 1
            }
            let sample = task.test[0]
            let reply = session.reply(to: sample.prompt, maxTokens: 24).text
            print(String(format: "%@ training: accuracy %d/%d (%.0f%%) on held-out names", when, correct, task.test.count,
                         100 * Double(correct) / Double(task.test.count)))
            print("  \(sample.prompt) → \(reply.debugDescription)  (expected \(sample.answer))")
        }

        /// The settings that tell runs of a sweep apart.
        func settings(_ c: TrainingConfiguration) -> [String: String] {
            var s = ["method": method, "precision": c.precision.rawValue, "grad_accum": "\(c.gradientAccumulation)",
                     "batch": "\(c.microBatch)", "checkpointing": "\(c.checkpointing)", "optimizer": c.optimizer.rawValue,
                     "fused_step": "\(c.fusedOptimizerStep)", "offload_optimizer": "\(c.offloadOptimizer)",
                     "offload_activations": "\(c.offloadActivations)", "activations": c.activationDType.rawValue]
            if case let .lora(l) = c.method {
                s["lora_r"] = "\(l.rank)"
                s["targets"] = l.targets.joined(separator: ",")
            }
            return s
        }


        /// The command as a YAML file and then the command line describe it (later values win).
        static func fromYAML(_ path: String) throws -> Train {
            let values: [String: Any]
            do {
                guard let loaded = try Yams.load(yaml: String(contentsOfFile: path, encoding: .utf8)) as? [String: Any] else {
                    throw FrugalError.malformedFile(path: path, problem: "not a mapping of option names to values")
                }
                values = loaded
            } catch let error as FrugalError {
                throw failure(error.description)
            } catch {
                throw failure("\(path): \(error)")
            }
            var arguments = [String]()
            for (key, value) in values.sorted(by: { $0.key < $1.key }) where key != "config" {
                switch value {
                case let flag as Bool: if flag { arguments.append("--\(key)") }
                case let list as [Any]: arguments += ["--\(key)", list.map { "\($0)" }.joined(separator: ",")]
                default: arguments += ["--\(key)", "\(value)"]
                }
            }
            var commandLine = Array(CommandLine.arguments.drop { $0 != "train" }.dropFirst())
            if let i = commandLine.firstIndex(of: "--config") { commandLine.removeSubrange(i...min(i + 1, commandLine.count - 1)) }
            do {
                return try Train.parse(arguments + commandLine)
            } catch {
                throw failure("\(path): \(Train.message(for: error))")
            }
        }

        /// The configuration the options describe.
        func trainingConfiguration() throws -> TrainingConfiguration {
            var c = TrainingConfiguration()
            switch method {
            case "lora":
                c.method = .lora(LoRAConfiguration(rank: loraRank, alpha: loraAlpha ?? Float(2 * loraRank), dropout: loraDropout,
                                                   targets: loraTargets.split(separator: ",").map(String.init),
                                                   rankStabilized: rsLoRA))
            case "full": c.method = .full
            default: throw FrugalError.invalidArgument("--method must be lora or full, not '\(method)'")
            }
            c.frozenLayers = try parseFrozenLayers(freezeLayers)
            c.steps = steps ?? (data == nil ? 60 : 100)
            c.microBatch = batch
            c.gradientAccumulation = gradAccum
            c.learningRate = learningRate
            guard let s = ScheduleKind(rawValue: schedule) else { throw FrugalError.invalidArgument("--schedule must be constant, linear or cosine") }
            c.schedule = s
            c.warmupSteps = warmup
            c.optimizer = try parseOptimizer(optimizer)
            c.weightDecay = weightDecay
            c.maxGradientNorm = maxGradNorm
            guard let p = PrecisionPolicy(rawValue: precision) else {
                throw FrugalError.invalidArgument("--precision must be fp32, fp16, bf16 or pure-bf16")
            }
            c.precision = p
            c.checkpointing = checkpointing
            c.fusedOptimizerStep = fusedStep
            c.offloadOptimizer = offloadOptimizer
            c.offloadActivations = offloadActivations
            c.activations = try parseActivations(activations)
            c.seed = seed
            c.checkpointEvery = checkpointEvery
            return c
        }
    }
}
