// `frugal report`: turn a sweep's results into SpeedUp/MemoryUp/EnergyUp tables, the seeds'
// combination table, a memory breakdown, Pareto charts (SVG), one HTML page, CSV and JSON.
import ArgumentParser
import Foundation
import FrugalCore
import FrugalMeasure

extension Frugal {
    struct Report: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Report a sweep: SpeedUp, MemoryUp and EnergyUp against its baseline, tables and charts.",
            discussion: """
            Reads DIR/results.jsonl (and DIR/sweep.json, the plan `frugal sweep` writes) and writes
            report.html, report.json, report.csv, combination.csv and pareto-*.svg into DIR (or --output).
            Results of several machines can be merged by concatenating their results.jsonl files.
            Evaluations saved in DIR as NAME.eval.json (`frugal eval --output`) become tables too:
              frugal eval --task sycophancy --data syc.jsonl --adapter runs/a/adapter --output runs/sweep/syc.eval.json
            """)

        @Argument(help: "The sweep's folder.") var directory: String
        @Option(help: "Folder for the report's files (default: the sweep's folder).") var output: String?
        @Option(help: "The report's title.") var title: String?

        func run() throws {
            let folder = URL(fileURLWithPath: directory)
            try Self.render(directory: folder, output: output.map { URL(fileURLWithPath: $0) } ?? folder, title: title)
        }

        /// Prints the report's tables and writes its files.
        static func render(directory: URL, output: URL, title: String? = nil) throws {
            let report = try withCleanErrors { try SweepReport.load(directory: directory, title: title) }
            print()
            print(report.tables.map(\.text).joined(separator: "\n\n"))
            if !report.notes.isEmpty { print("\n" + report.notes.map { "note: " + $0 }.joined(separator: "\n")) }
            let files = try report.write(to: output)
            print("\nreport: " + files.map(\.lastPathComponent).joined(separator: ", ") + " in \(output.path)")
        }
    }
}
