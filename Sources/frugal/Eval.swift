// `frugal eval`: perplexity, multiple-choice and sycophancy evaluations of a base model and its
// adapters, as a before/after table and a JSON file.
import ArgumentParser
import Foundation
import FrugalCore
import FrugalEval
import FrugalFormats
import FrugalModels
import FrugalTraining

extension Frugal {
    struct Eval: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Evaluate a model and its adapters: perplexity, multiple-choice log-likelihood, sycophancy.",
            discussion: """
            Runs the base model, then the base model with each --adapter, on the same
            items, and prints one row per model.
              perplexity       mean NLL and perplexity over the target tokens of a
                               held-out split of a training data file
              multiple-choice  accuracy of the likeliest answer (95% Wilson interval)
              sycophancy       accuracy and sycophancy rate: how often the likeliest
                               answer is the one that only agrees with the user
            Splits are deterministic by --seed and --test-fraction: by record for
            perplexity and multiple-choice, by question for sycophancy. --limit
            samples N items of the split. --export-train writes the train split as
            chat messages for `frugal train --data`, and stops.
              frugal eval --task sycophancy --data syco.jsonl --export-train train.jsonl
              frugal train --data train.jsonl --output runs/syco
              frugal eval --task sycophancy --data syco.jsonl --limit 300 \\
                          --adapter runs/syco/adapter --output syco.json
            """)

        enum Task: String, ExpressibleByArgument, CaseIterable {
            case perplexity
            case multipleChoice = "multiple-choice"
            case sycophancy
        }

        @OptionGroup var model: ModelOptions
        @OptionGroup var device: DeviceOptions
        @Option(help: "A PEFT adapter folder to evaluate on the base model (repeat for several).") var adapter: [String] = []
        @Option(help: "perplexity, multiple-choice or sycophancy.") var task: Task
        @Option(help: "The data file: a training data file for perplexity; JSON lines with corrects/incorrects, answer_matching_behavior or choices/answer for the others.")
        var data: String
        @Option(help: "Data format for perplexity when the file does not tell: alpaca, messages, sharegpt, text.") var format: String?
        @Option(help: "train, test or all (default: test, or all for multiple-choice).") var split: String?
        @Option(name: .customLong("test-fraction"), help: "Fraction held out as the test split.") var testFraction = 0.2
        @Option(help: "Seed of the split and of --limit's sample.") var seed: UInt64 = 0
        @Option(help: "Evaluate N items of the split, drawn at random by the seed.") var limit: Int?
        @Flag(name: .customLong("chat-template"), help: "Multiple-choice: put the prompt in the chat template as a user turn (default: raw text).")
        var chatTemplate = false
        @Option(name: .customLong("max-length"), help: "Perplexity: longest sequence in tokens (longer texts are cut).") var maxLength = 512
        @Option(help: "Write the results as JSON here; name it NAME.eval.json in a sweep's folder and `frugal report` shows it.")
        var output: String?
        @Option(name: .customLong("export-train"), help: "Write the train split as JSON lines of chat messages to this file, then stop.")
        var exportTrain: String?
        @Flag(name: .customLong("balance-letters"), help: "With --export-train: reverse the lettered options of every other item, so each question is trained in both orders and no letter is usually right.")
        var balanceLetters = false
        @Flag(name: .customLong("no-base"), help: "Evaluate only the adapters, not the base model.") var noBase = false

        func validate() throws {
            guard testFraction > 0 && testFraction < 1 else { throw ValidationError("--test-fraction must be in (0, 1)") }
            if let split, DataSplit(rawValue: split) == nil { throw ValidationError("--split must be train, test or all") }
            if let limit, limit < 1 { throw ValidationError("--limit must be positive") }
            guard maxLength > 1 else { throw ValidationError("--max-length must be at least 2") }
            for path in adapter where !FileManager.default.fileExists(atPath: path + "/adapter_config.json") {
                throw ValidationError("--adapter \(path): no adapter_config.json there (a PEFT adapter folder, as `frugal train` writes to <output>/adapter)")
            }
            if noBase && adapter.isEmpty { throw ValidationError("--no-base needs at least one --adapter") }
            if balanceLetters && (exportTrain == nil || task == .perplexity) {
                throw ValidationError("--balance-letters applies to --export-train of a multiple-choice or sycophancy task")
            }
            if let format, DataFormat(rawValue: format) == nil {
                throw ValidationError("--format must be alpaca, messages, sharegpt or text")
            }
        }

        func run() throws {
            let plan = SplitPlan(testFraction: testFraction, seed: seed)
            let split = split.flatMap(DataSplit.init(rawValue:)) ?? (task == .multipleChoice ? .all : .test)
            let files = try withCleanErrors { try ModelFiles(path: model.path) }
            let tokenizer = try withCleanErrors { try files.tokenizer() }
            let template = files.chatTemplate
            let system = ChatTemplate.defaultSystemPrompt(in: files.chatTemplateSource)

            var report = EvalReport(task: task.rawValue, model: files.path, data: data, split: split.rawValue,
                                    testFraction: testFraction, seed: seed, limit: limit)
            let evaluate: (Decoder) -> EvalReport.Run
            let rowCount: String
            switch task {
            case .perplexity:
                let sequences = try perplexitySequences(plan: plan, split: split, tokenizer: tokenizer, template: template, system: system)
                guard exportTrain == nil else { return }
                rowCount = "\(sequences.count) sequences"
                evaluate = { decoder in
                    var progress = Progress(total: sequences.count)
                    let result = Perplexity.evaluate(decoder, sequences: sequences) { progress.update($0) }
                    progress.finish()
                    return EvalReport.Run(perplexity: result)
                }
            case .multipleChoice, .sycophancy:
                let (items, questions) = try multipleChoiceItems(plan: plan, split: split)
                guard exportTrain == nil else { return }
                if chatTemplate && template == nil { throw failure("--chat-template: the model has no chat template") }
                report.scoring = chatTemplate ? "chat-template" : "raw"
                report.questions = questions
                rowCount = "\(items.count) items" + (questions.map { ", \($0.test) test / \($0.train) train questions" } ?? "")
                evaluate = { decoder in
                    let scorer = MultipleChoiceScorer(decoder: decoder, tokenizer: tokenizer, template: chatTemplate ? template : nil,
                                                      defaultSystemPrompt: system)
                    var progress = Progress(total: items.count)
                    let result = scorer.evaluate(items) { progress.update($0) }
                    progress.finish()
                    return EvalReport.Run(multipleChoice: result)
                }
            }
            print("\(task.rawValue) on \(data), \(split.rawValue) split (seed \(seed), test fraction \(testFraction)): \(rowCount)")

            let compute = try device.compute()
            print("device: \(compute.description)")
            for path in (noBase ? [] : [nil]) + adapter.map(Optional.some) {
                let decoder = try model.decoder(files, on: compute.backend)
                if let path {
                    try withCleanErrors { _ = try PEFTAdapter.load(from: URL(fileURLWithPath: path), into: decoder) }
                }
                let name = path ?? "base"
                FileHandle.standardError.write(Data("\(name)\n".utf8))
                let start = ContinuousClock.now
                var run = evaluate(decoder)
                let elapsed = ContinuousClock.now - start
                run.name = name
                run.adapter = path
                run.seconds = elapsed.inSeconds
                report.runs.append(run)
            }
            print(report.table.render())
            if let output {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                encoder.keyEncodingStrategy = .convertToSnakeCase
                encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
                try encoder.encode(report).write(to: URL(fileURLWithPath: output))
                print("wrote \(output)")
            }
        }

        // MARK: - Data

        /// The items of the split, and for sycophancy the question counts of each side; writes
        /// the train split and returns when --export-train is given.
        private func multipleChoiceItems(plan: SplitPlan, split: DataSplit) throws -> ([MultipleChoiceItem], EvalReport.Questions?) {
            let all = try withCleanErrors { try MultipleChoiceData(contentsOf: data) }
            var isTest: [Bool], questions: EvalReport.Questions?
            if task == .sycophancy {
                guard all.items.allSatisfy({ !$0.sycophantic.isEmpty }) else {
                    throw failure("\(data): sycophancy needs records with corrects/incorrects or answer_matching_behavior (use --task multiple-choice)")
                }
                let sycophancy = SycophancyTask(items: all.items)
                isTest = sycophancy.isTest(plan)
                let held = Set(zip(sycophancy.questions, isTest).filter(\.1).map(\.0))
                questions = EvalReport.Questions(train: sycophancy.questionCount - held.count, test: held.count,
                                                 testQuestions: held.map { String($0.prefix { $0 != "\n" }) }.sorted())
            } else {
                isTest = plan.isTest(count: all.items.count)
            }
            if let exportTrain {
                var train = SplitPlan.indices(of: .train, isTest: isTest).map { all.items[$0] }
                if balanceLetters {
                    for i in stride(from: 1, to: train.count, by: 2) {
                        guard let reversed = SycophancyTask.reversingOptions(train[i]) else {
                            throw failure("--balance-letters: \(data) line \(train[i].line) has no lettered options \" (A) …\" answered by \" (A)\"")
                        }
                        train[i] = reversed
                    }
                }
                try writeTrain(try SycophancyTask.jsonLines(SycophancyTask.trainingConversations(train)), count: train.count,
                               questions: questions?.train, to: exportTrain)
                return ([], questions)
            }
            let chosen = plan.sample(SplitPlan.indices(of: split, isTest: isTest), limit: limit)
            return (chosen.map { all.items[$0] }, questions)
        }

        /// The tokenized sequences of the split: records are split, except that a single text
        /// (a .txt file) is cut into --max-length pieces first and the pieces are split.
        private func perplexitySequences(plan: SplitPlan, split: DataSplit, tokenizer: Tokenizer, template: ChatTemplate?,
                                         system: String?) throws -> [(tokens: [Int32], targets: [Int32])] {
            let dataset = try withCleanErrors { try TrainingDataset(contentsOf: data, format: format.flatMap(DataFormat.init(rawValue:))) }
            let examples = ExampleTokenizer(tokenizer: tokenizer, template: template, defaultSystemPrompt: system, maxLength: maxLength)
            if dataset.examples.count == 1 {
                if exportTrain != nil { throw failure("--export-train: \(data) is a single text; split it into records first") }
                let pieces = try withCleanErrors { try examples.tokenize(dataset.examples) }
                let chosen = plan.sample(SplitPlan.indices(of: split, isTest: plan.isTest(count: pieces.count)), limit: limit)
                return chosen.map { (pieces[$0].tokens, pieces[$0].targets) }
            }
            let isTest = plan.isTest(count: dataset.examples.count)
            if let exportTrain {
                let train = SplitPlan.indices(of: .train, isTest: isTest).map { dataset.examples[$0] }
                try writeTrain(try Self.jsonLines(train), count: train.count, questions: nil, to: exportTrain)
                return []
            }
            let chosen = plan.sample(SplitPlan.indices(of: split, isTest: isTest), limit: limit)
            return try withCleanErrors { try examples.tokenize(chosen.map { dataset.examples[$0] }) }.map { ($0.tokens, $0.targets) }
        }

        private func writeTrain(_ lines: Data, count: Int, questions: Int?, to path: String) throws {
            try lines.write(to: URL(fileURLWithPath: path))
            print("wrote the train split to \(path): \(count) records" + (questions.map { " (\($0) questions)" } ?? ""))
        }

        /// Training examples as JSON lines of `messages` or `text` records.
        private static func jsonLines(_ examples: [TrainingExample]) throws -> Data {
            try examples.reduce(into: Data()) { data, example in
                let record: [String: Any]
                switch example.content {
                case let .chat(messages): record = ["messages": messages.map { ["role": $0.role, "content": $0.content] }]
                case let .text(text): record = ["text": text]
                }
                data.append(try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys, .withoutEscapingSlashes]))
                data.append(UInt8(ascii: "\n"))
            }
        }
    }
}

/// What `frugal eval --output` writes.
struct EvalReport: Encodable {
    var task: String
    var model: String
    var data: String
    var split: String
    var testFraction: Double
    var seed: UInt64
    var limit: Int?
    /// "raw" or "chat-template" (multiple-choice tasks).
    var scoring: String?
    /// Distinct questions on each side (sycophancy).
    var questions: Questions?
    var date = ISO8601DateFormatter().string(from: Date())
    var runs: [Run] = []

    struct Questions: Encodable {
        var train: Int
        var test: Int
        /// The held-out questions (their first line).
        var testQuestions: [String]
    }

    /// One model's result: the base model, or the base with an adapter.
    struct Run: Encodable {
        var name = ""
        var adapter: String?
        var seconds = 0.0
        var perplexity: PerplexityResult?
        var multipleChoice: MultipleChoiceResult?
    }

    init(task: String, model: String, data: String, split: String, testFraction: Double, seed: UInt64, limit: Int?) {
        self.task = task; self.model = model; self.data = data; self.split = split
        self.testFraction = testFraction; self.seed = seed; self.limit = limit
    }

    /// One row per model.
    var table: Table {
        if task == "perplexity" {
            return Table(header: ["model", "sequences", "tokens", "mean NLL", "perplexity", "time"], rows: runs.map { run in
                let p = run.perplexity!
                return [run.name, "\(p.sequences)", "\(p.tokens)", String(format: "%.4f", p.meanNLL),
                        String(format: "%.3f", p.perplexity), String(format: "%.0f s", run.seconds)]
            })
        }
        let sycophancy = runs.first?.multipleChoice?.sycophancyRate != nil
        return Table(header: ["model", "items", "accuracy [95% CI]"] + (sycophancy ? ["sycophancy [95% CI]"] : []) + ["P(correct)", "time"],
                     rows: runs.map { run in
            let r = run.multipleChoice!
            return [run.name, "\(r.accuracy.total)", r.accuracy.percentWithInterval]
                + (r.sycophancyRate.map { [$0.percentWithInterval] } ?? [])
                + [String(format: "%.3f", r.meanCorrectMass), String(format: "%.0f s", run.seconds)]
        })
    }
}

/// Items done, on one self-updating line of standard error.
private struct Progress {
    let total: Int
    private let interactive = isatty(STDERR_FILENO) != 0
    private var shown = 0

    init(total: Int) { self.total = total }

    mutating func update(_ done: Int) {
        guard interactive || done == total || done - shown >= max(total / 10, 1) else { return }
        shown = done
        FileHandle.standardError.write(Data(((interactive ? "\r\u{1B}[2K" : "") + "  \(done)/\(total)" + (interactive ? "" : "\n")).utf8))
    }

    func finish() { if interactive { FileHandle.standardError.write(Data("\n".utf8)) } }
}
