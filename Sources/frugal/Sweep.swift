// `frugal sweep`: run a baseline plus a list or factorial of `frugal train` configurations, each in
// a fresh process, out-of-memory runs recorded as such, resuming where an interrupted sweep stopped.
import ArgumentParser
import Foundation
import FrugalCore
import FrugalCUDA
import FrugalMeasure
import Yams

extension Frugal {
    struct Sweep: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run a factorial or a list of training configurations, each in a fresh process.",
            discussion: """
            The sweep file (YAML) names `frugal train` options by their long names:
              common: {data: alpaca.json, limit: 200, batch: 8, steps: 3}
              factors: {grad-accum: [1, 8], precision: [fp32, bf16], method: [full, lora]}
              baseline: {grad-accum: 1, precision: fp32, method: full}   # or a run's name
              repeats: 2
              memory-limit: 6GiB        # per run (CPU: the process's address space)
            A factor's level may carry options of its own: grad-accum: [{value: 1, steps: 24}, {value: 8, steps: 3}].
            `runs:` lists configurations one by one instead (or as well): - {name: big, batch: 16}.
            Results go to OUTPUT/results.jsonl (default runs/<file name>); run again to resume. An
            out-of-memory run is recorded as such ("X") and the sweep goes on. Then the report is
            written (see `frugal report`).
            """)

        @Argument(help: "The sweep file (YAML).") var file: String
        @Option(help: "Folder for results (default: the file's `output:`, else runs/<file name>).") var output: String?
        @Option(name: .customLong("memory-limit"), help: "Address-space limit of each run's process (e.g. 4GiB); runs over it are out of memory.")
        var memoryLimit: String?
        @Option(help: "Runs of each configuration (overrides the file's `repeats:`).") var repeats: Int?
        @Flag(name: .customLong("dry-run"), help: "Print the runs' commands without running them.") var dryRun = false

        func validate() throws {
            if let memoryLimit, ByteCount.parse(memoryLimit) == nil {
                throw ValidationError("--memory-limit: '\(memoryLimit)' is not a byte count (e.g. 4GiB)")
            }
            if let repeats, repeats < 1 { throw ValidationError("--repeats must be at least 1") }
        }

        func run() throws {
            var (specification, fileOutput) = try withCleanErrors { try SweepFile.load(file) }
            if let repeats { specification.repeats = repeats }
            if let memoryLimit { specification.memoryLimit = ByteCount.parse(memoryLimit) }
            let plan = try withCleanErrors { try specification.plan() }
            let stem = URL(fileURLWithPath: file).deletingPathExtension().lastPathComponent
            let directory = URL(fileURLWithPath: output ?? fileOutput ?? "runs/\(stem)")
            var runner = SweepRunner(plan: plan, directory: directory, executable: Self.frugalExecutable)
            // On a GPU, each run's starting point: the memory in use before it (NVML, device 0).
            if let nvml = try? NVML(), let device = try? nvml.device(0) {
                nonisolated(unsafe) let handle = device
                runner.deviceMemoryInUse = { try? nvml.memoryUsed(handle) }
            }
            if dryRun {
                for c in plan.configurations {
                    let limit = c.memoryLimit.map { " [memory limit \(formatBytes($0))]" } ?? ""
                    print("\(c.name)\(c.name == plan.baseline ? " (baseline)" : "")\(limit): frugal train \(c.arguments.joined(separator: " "))")
                }
                print("\(plan.configurations.count) configurations × \(plan.repeats) repeat(s) → \(directory.path)")
                return
            }
            Self.say("sweep: \(plan.configurations.count) configurations × \(plan.repeats) repeat(s), baseline \(plan.baseline) → \(directory.path)")
            let complete = try withCleanErrors {
                try runner.run { event in
                    switch event {
                    case let .skipped(record):
                        Self.say("  done already: \(SweepRunner.runID(record.configuration, record.repetition)) (\(Self.summary(record.result)))")
                    case let .started(configuration, repetition, index, count, _):
                        Self.say("[\(index)/\(count)] \(SweepRunner.runID(configuration, repetition))")
                    case let .finished(record):
                        Self.say("  → \(Self.summary(record.result))")
                    case let .interrupted(configuration, repetition):
                        Self.say("  interrupted; \(SweepRunner.runID(configuration, repetition)) will run again when the sweep resumes")
                    }
                }
            }
            guard complete else { throw ExitCode(130) }
            try Report.render(directory: directory, output: directory)
        }

        /// Writes a progress line at once (print's standard output is buffered when it is not a terminal).
        static func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }

        /// One run's outcome in a few words.
        static func summary(_ r: RunResult) -> String {
            if r.outOfMemory { return "X (\(r.error ?? "out of memory"))" }
            if let error = r.error { return "failed: \(error)" }
            var parts = [String]()
            if let s = r.seconds { parts.append(String(format: "%.2f s", s)) }
            if let p = r.peakBytes { parts.append("peak \(formatBytes(p))") }
            if let a = r.lossFirst, let b = r.lossLast { parts.append(String(format: "loss %.4f → %.4f", a, b)) }
            if let e = r.energyJoules { parts.append(String(format: "%.1f J", e)) }
            return parts.joined(separator: ", ")
        }

        /// This program, for the runs' processes: /proc/self/exe on Linux, else argv[0].
        static var frugalExecutable: URL {
            if let path = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
                return URL(fileURLWithPath: path)
            }
            return URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL
        }
    }
}

/// Reads a sweep file (YAML) into a `SweepSpecification`, keeping the order of its factors.
enum SweepFile {
    static let keys: Set<String> = ["common", "factors", "runs", "baseline", "repeats", "memory-limit", "output", "name"]

    /// - Returns: the specification and the file's `output:` folder, if any.
    static func load(_ path: String) throws -> (SweepSpecification, String?) {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw FrugalError.missingFile(path: path, what: "a sweep file")
        }
        let node: Node?
        do { node = try Yams.compose(yaml: text) } catch {
            throw FrugalError.malformedFile(path: path, problem: "not YAML: \(error)")
        }
        func bad(_ problem: String) -> FrugalError { .malformedFile(path: path, problem: problem) }
        guard let root = node?.mapping else { throw bad("not a mapping (common:, factors:, runs:, baseline:, repeats:)") }
        var specification = SweepSpecification()
        var output: String?
        for (keyNode, value) in root {
            guard let key = keyNode.scalar?.string else { throw bad("a key is not a name") }
            switch key {
            case "common": specification.common = try options(value, "common", bad)
            case "factors":
                guard let factors = value.mapping else { throw bad("factors: must map option names to lists of levels") }
                for (nameNode, levelsNode) in factors {
                    let name = nameNode.scalar?.string ?? ""
                    guard let levels = levelsNode.sequence else { throw bad("factor '\(name)' must be a list of levels") }
                    specification.factors.append(SweepFactor(name: name, levels: try levels.map { level in
                        if let scalar = level.scalar { return SweepLevel(scalar.string) }
                        var extra = try options(level, "factor '\(name)'", bad)
                        guard let value = extra.removeValue(forKey: "value") else {
                            throw bad("a level of factor '\(name)' given as a mapping needs a value:")
                        }
                        return SweepLevel(value, options: extra)
                    }))
                }
            case "runs":
                guard let runs = value.sequence else { throw bad("runs: must be a list of option mappings") }
                for run in runs {
                    var o = try options(run, "runs", bad)
                    let name = o.removeValue(forKey: "name") ?? ""
                    specification.runs.append(SweepConfiguration(name: name, options: o))
                }
            case "baseline":
                if let name = value.scalar?.string {
                    specification.baseline = .named(name)
                } else {
                    specification.baseline = .options(try options(value, "baseline", bad))
                }
            case "repeats":
                guard let n = value.scalar.flatMap({ Int($0.string) }) else { throw bad("repeats: must be a whole number") }
                specification.repeats = n
            case "memory-limit":
                guard let bytes = value.scalar.flatMap({ ByteCount.parse($0.string) }) else {
                    throw bad("memory-limit: must be a byte count (e.g. 4GiB)")
                }
                specification.memoryLimit = bytes
            case "output": output = value.scalar?.string
            case "name": break
            default:
                throw bad("unknown key '\(key)' (expected one of \(keys.sorted().joined(separator: ", ")))")
            }
        }
        return (specification, output)
    }

    /// A mapping of option names to values; lists become comma-separated values.
    private static func options(_ node: Node, _ context: String, _ bad: (String) -> FrugalError) throws -> [String: String] {
        guard let mapping = node.mapping else { throw bad("\(context): expected a mapping of option names to values") }
        var result = [String: String]()
        for (key, value) in mapping {
            guard let name = key.scalar?.string else { throw bad("\(context): an option name is not a string") }
            if let scalar = value.scalar {
                result[name] = scalar.string
            } else if let list = value.sequence, list.allSatisfy({ $0.scalar != nil }) {
                result[name] = list.map { $0.scalar!.string }.joined(separator: ",")
            } else {
                throw bad("\(context): option '\(name)' must be a value or a list of values")
            }
        }
        return result
    }
}
