// EvaluationSummary: what `frugal eval --output` wrote, read back for `frugal report` — one
// table of the models (base, adapters) with their accuracy, sycophancy rate or perplexity.
import Foundation
import FrugalCore

/// One `frugal eval` result file: the task, the data and each model's figures (its keys are
/// snake_case, as `frugal eval` writes them).
public struct EvaluationSummary: Codable, Sendable, Equatable {
    public var task: String
    public var model: String
    public var data: String
    public var split: String
    public var runs: [Run]

    /// One model's figures (the fields of `frugal eval`'s JSON that a report shows).
    public struct Run: Codable, Sendable, Equatable {
        public var name: String
        public var seconds: Double
        public var perplexity: Perplexity?
        public var multipleChoice: MultipleChoice?

        enum CodingKeys: String, CodingKey {
            case name, seconds, perplexity
            case multipleChoice = "multiple_choice"
        }
    }

    public struct Perplexity: Codable, Sendable, Equatable {
        public var sequences: Int
        public var tokens: Int
        public var totalNLL: Double

        enum CodingKeys: String, CodingKey {
            case sequences, tokens
            case totalNLL = "total_nll"
        }
    }

    /// A rate with its 95% interval.
    public struct Rate: Codable, Sendable, Equatable {
        public var count: Int
        public var total: Int
        public var rate: Double
        public var lower: Double
        public var upper: Double

        var text: String { String(format: "%.1f%% [%.1f, %.1f]", 100 * rate, 100 * lower, 100 * upper) }
    }

    public struct MultipleChoice: Codable, Sendable, Equatable {
        public var accuracy: Rate
        public var sycophancyRate: Rate?

        enum CodingKeys: String, CodingKey {
            case accuracy
            case sycophancyRate = "sycophancy_rate"
        }
    }

    /// The file names `frugal report` reads evaluations from: `*.eval.json`.
    public static let fileSuffix = ".eval.json"

    /// Every `*.eval.json` in `directory`, by file name.
    /// - Throws: `FrugalError.malformedFile` naming a file that is not `frugal eval` output.
    public static func load(directory: URL) throws -> [EvaluationSummary] {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? [])
            .filter { $0.hasSuffix(fileSuffix) }.sorted()
        return try names.map { name in
            let url = directory.appendingPathComponent(name)
            do {
                return try JSONDecoder().decode(EvaluationSummary.self, from: Data(contentsOf: url))
            } catch {
                throw FrugalError.malformedFile(path: url.path, problem: "not the output of `frugal eval --output`: \(error)")
            }
        }
    }

    /// One row per model: accuracy and sycophancy rate (multiple choice) or perplexity.
    public var table: ReportTable {
        let sycophancy = runs.contains { $0.multipleChoice?.sycophancyRate != nil }
        let header: [String]
        let rows: [[String]]
        if task == "perplexity" {
            header = ["model", "tokens", "mean NLL", "perplexity", "time"]
            rows = runs.map { run in
                guard let p = run.perplexity, p.tokens > 0 else { return [run.name, "–", "–", "–", "–"] }
                let mean = p.totalNLL / Double(p.tokens)
                return [run.name, "\(p.tokens)", String(format: "%.4f", mean), String(format: "%.3f", exp(mean)),
                        String(format: "%.0f s", run.seconds)]
            }
        } else {
            header = ["model", "items", "accuracy [95% CI]"] + (sycophancy ? ["sycophancy [95% CI]"] : []) + ["time"]
            rows = runs.map { run in
                guard let r = run.multipleChoice else { return [run.name] + Array(repeating: "–", count: header.count - 1) }
                return [run.name, "\(r.accuracy.total)", r.accuracy.text] + (sycophancy ? [r.sycophancyRate?.text ?? "–"] : [])
                    + [String(format: "%.0f s", run.seconds)]
            }
        }
        let source = (data as NSString).lastPathComponent
        return ReportTable(title: "Evaluation: \(task) on \(source) (\(split) split)", header: [header], rows: rows,
                           notes: ["model: \(model)"])
    }
}
