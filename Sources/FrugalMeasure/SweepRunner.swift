// SweepRunner: runs a sweep's configurations, each in a fresh process, records every outcome
// (out-of-memory included) as a line of results.jsonl, and resumes an interrupted sweep.
import Foundation
import FrugalCore

/// One run of a sweep: its configuration, repeat and options beside the run's `RunResult`.
///
/// Encodes flat — the result's keys plus `configuration`, `repeat`, `options` and
/// `termination` — so a line of results.jsonl also reads as a plain `RunResult`, and a plain
/// `RunResult` line (from `frugal train --result`) reads as a record of its own configuration.
public struct SweepRecord: Codable, Sendable {
    /// The configuration's name.
    public var configuration: String
    /// 1-based.
    public var repetition: Int
    /// The configuration's `frugal train` options.
    public var options: [String: String]
    /// How the run's process ended ("exit 0", "signal 9"); nil when not run by a sweep.
    public var termination: String?
    public var result: RunResult

    public init(configuration: String, repetition: Int, options: [String: String], termination: String?, result: RunResult) {
        self.configuration = configuration
        self.repetition = repetition
        self.options = options
        self.termination = termination
        self.result = result
    }

    /// True when the run finished with figures, or was out of memory: either way it need not run again.
    public var isComplete: Bool { result.outOfMemory || result.error == nil }

    private enum Keys: String, CodingKey { case configuration, `repeat`, options, termination }

    public init(from decoder: Decoder) throws {
        result = try RunResult(from: decoder)
        let c = try decoder.container(keyedBy: Keys.self)
        configuration = try c.decodeIfPresent(String.self, forKey: .configuration) ?? result.name
        repetition = try c.decodeIfPresent(Int.self, forKey: .repeat) ?? 1
        options = try c.decodeIfPresent([String: String].self, forKey: .options) ?? result.settings
        termination = try c.decodeIfPresent(String.self, forKey: .termination)
    }

    public func encode(to encoder: Encoder) throws {
        try result.encode(to: encoder)
        var c = encoder.container(keyedBy: Keys.self)
        try c.encode(configuration, forKey: .configuration)
        try c.encode(repetition, forKey: .repeat)
        try c.encode(options, forKey: .options)
        try c.encodeIfPresent(termination, forKey: .termination)
    }
}

/// What a sweep reports as it goes; the caller renders it.
public enum SweepEvent: Sendable {
    /// A run whose result exists (or that is recovered from its result file) is not run again.
    case skipped(SweepRecord)
    /// A run starts: its position among the runs still to do, and its command line.
    case started(configuration: String, repetition: Int, index: Int, count: Int, command: [String])
    case finished(SweepRecord)
    /// The sweep was interrupted (SIGINT/SIGTERM) during this run, which is not recorded.
    case interrupted(configuration: String, repetition: Int)
}

/// Runs a plan's configurations, each `repeats` times, as fresh processes of `executable`.
///
/// Layout of `directory`: `sweep.json` (the plan), `results.jsonl` (one `SweepRecord` a line,
/// appended as runs end), `runs/<run>.json` (each run's `RunResult`), `logs/<run>.log` (its
/// standard output and error), and `work/<run>/` (its `--output`, removed after the run).
public struct SweepRunner: Sendable {
    public var plan: SweepPlan
    public var directory: URL
    /// The program to run (normally `frugal` itself) and the arguments before the options.
    public var executable: URL
    public var leadingArguments: [String]
    /// Reads the device memory in use now (NVML on a GPU), recorded before each run; nil: not read.
    public var deviceMemoryInUse: (@Sendable () -> Int?)?

    public init(plan: SweepPlan, directory: URL, executable: URL, leadingArguments: [String] = ["train"]) {
        self.plan = plan
        self.directory = directory
        self.executable = executable
        self.leadingArguments = leadingArguments
    }

    public var resultsFile: URL { directory.appendingPathComponent("results.jsonl") }
    public var planFile: URL { directory.appendingPathComponent("sweep.json") }

    /// A run's file stem: "<configuration>.r<repeat>".
    public static func runID(_ configuration: String, _ repetition: Int) -> String { "\(configuration).r\(repetition)" }

    /// Runs what is not done yet, repeat by repeat (all configurations once, then again).
    ///
    /// A run that ends with a result file is recorded with its figures; one that runs out of
    /// memory is recorded `outOfMemory` (and not run again on resume); one that fails otherwise
    /// is recorded with its error and run again on resume. SIGINT or SIGTERM kills the running
    /// child and stops the sweep (it returns after `.interrupted`).
    /// - Returns: true when every run is complete.
    @discardableResult
    public func run(events: (SweepEvent) -> Void) throws -> Bool {
        let files = FileManager.default
        for folder in ["runs", "logs", "work"] {
            try files.createDirectory(at: directory.appendingPathComponent(folder), withIntermediateDirectories: true)
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(plan).write(to: planFile, options: .atomic)

        let existing = Self.readRecords(resultsFile).records
        var pending = [(SweepConfiguration, Int)]()
        for repetition in 1...plan.repeats {
            for configuration in plan.configurations {
                let id = Self.runID(configuration.name, repetition)
                let resultFile = directory.appendingPathComponent("runs/\(id).json")
                let previous = existing.last { $0.configuration == configuration.name && $0.repetition == repetition }
                if let previous, previous.options == configuration.options, previous.isComplete {
                    events(.skipped(previous))
                } else if previous == nil, let data = files.contents(atPath: resultFile.path),
                          let result = try? JSONDecoder().decode(RunResult.self, from: data) {
                    // The run finished but the sweep stopped before recording it.
                    let record = SweepRecord(configuration: configuration.name, repetition: repetition,
                                             options: configuration.options, termination: "exit 0", result: result)
                    try append(record)
                    events(.skipped(record))
                } else {
                    try? files.removeItem(at: resultFile)
                    pending.append((configuration, repetition))
                }
            }
        }
        let interruption = Interruption()
        for (index, (configuration, repetition)) in pending.enumerated() {
            let id = Self.runID(configuration.name, repetition)
            let resultFile = directory.appendingPathComponent("runs/\(id).json")
            let logFile = directory.appendingPathComponent("logs/\(id).log")
            let work = directory.appendingPathComponent("work/\(id)")
            try? files.removeItem(at: work)
            let memoryBefore = deviceMemoryInUse?()
            let arguments = leadingArguments + configuration.arguments + ["--output", work.path, "--result", resultFile.path]
            events(.started(configuration: configuration.name, repetition: repetition, index: index + 1,
                            count: pending.count, command: [executable.path] + arguments))
            let ending = try Self.spawn(executable, arguments, log: logFile, memoryLimit: configuration.memoryLimit,
                                        interruption: interruption)
            try? files.removeItem(at: work)
            if interruption.isSet {
                events(.interrupted(configuration: configuration.name, repetition: repetition))
                return false
            }
            var result: RunResult
            if ending.isSuccess, let data = files.contents(atPath: resultFile.path),
               let decoded = try? JSONDecoder().decode(RunResult.self, from: data) {
                result = decoded
            } else {
                let log = Self.tail(of: logFile)
                result = RunResult(name: configuration.name, device: "unknown (the run did not finish)",
                                   command: ([executable.path] + arguments).joined(separator: " "), settings: configuration.options)
                if let reason = Self.outOfMemoryReason(ending, log: log, memoryLimit: configuration.memoryLimit) {
                    result.outOfMemory = true
                    result.error = reason
                    try result.write(to: resultFile)
                } else {
                    result.error = "\(ending): " + (Self.lastLines(log, 3) ?? "no output")
                }
            }
            result.name = configuration.name
            result.deviceMemoryInUseBefore = memoryBefore
            let record = SweepRecord(configuration: configuration.name, repetition: repetition,
                                     options: configuration.options, termination: "\(ending)", result: result)
            try append(record)
            events(.finished(record))
        }
        return true
    }

    /// Appends one record as a JSON line (a torn last line from a crash is skipped when read).
    private func append(_ record: SweepRecord) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var line = try encoder.encode(record)
        line.append(0x0A)
        if !FileManager.default.fileExists(atPath: resultsFile.path) {
            guard FileManager.default.createFile(atPath: resultsFile.path, contents: nil) else {
                throw FrugalError.invalidArgument("\(resultsFile.path): cannot create the sweep's results")
            }
        }
        let handle = try FileHandle(forWritingTo: resultsFile)
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: line)
        try handle.synchronize()
    }

    /// Reads a results.jsonl: the records, and how many lines could not be read.
    public static func readRecords(_ url: URL) -> (records: [SweepRecord], unreadable: Int) {
        guard let data = FileManager.default.contents(atPath: url.path) else { return ([], 0) }
        var records = [SweepRecord](), unreadable = 0
        for line in data.split(separator: 0x0A) where !line.allSatisfy({ $0 == 0x20 || $0 == 0x0D }) {
            if var record = try? JSONDecoder().decode(SweepRecord.self, from: Data(line)) {
                // A failure whose words count as out of memory now but did not when it was
                // recorded (Frugal's own "out of GPU memory", before 2026-11-23) is read as one.
                if !record.result.outOfMemory, let error = record.result.error, let line = outOfMemoryLine(error) {
                    record.result.outOfMemory = true
                    record.result.error = "out of memory: " + line
                }
                records.append(record)
            } else {
                unreadable += 1
            }
        }
        return (records, unreadable)
    }
}

// MARK: - Processes

extension SweepRunner {
    /// How a run's process ended.
    public enum Ending: Sendable, Equatable, CustomStringConvertible {
        case exit(Int32)
        case signal(Int32)

        public var isSuccess: Bool { self == .exit(0) }

        public var description: String {
            switch self {
            case let .exit(status): "exit \(status)"
            case let .signal(number): "signal \(number)" + (Self.signalNames[number].map { " (\($0))" } ?? "")
            }
        }

        private static let signalNames: [Int32: String] = [SIGILL: "SIGILL", SIGTRAP: "SIGTRAP", SIGABRT: "SIGABRT",
                                                           SIGBUS: "SIGBUS", SIGSEGV: "SIGSEGV", SIGKILL: "SIGKILL",
                                                           SIGTERM: "SIGTERM", SIGINT: "SIGINT"]
    }

    /// Why a failed run counts as out of memory, or nil when it does not: killed by SIGKILL (the
    /// kernel's OOM killer); its output says so ("out of memory", Frugal's own "out of GPU memory"
    /// and "out of host memory", "Could not allocate memory", "Cannot allocate memory",
    /// "bad_alloc"); or it crashed on a signal while under a memory limit (Swift traps when an
    /// allocation fails).
    public static func outOfMemoryReason(_ ending: Ending, log: String, memoryLimit: Int?) -> String? {
        if ending.isSuccess { return nil }
        if let line = outOfMemoryLine(log) { return "out of memory: " + line }
        if ending == .signal(SIGKILL) { return "out of memory: killed by SIGKILL (the kernel's OOM killer)" }
        if case .signal = ending, let memoryLimit {
            return "out of memory: crashed (\(ending)) under a memory limit of \(memoryLimit) bytes"
        }
        return nil
    }

    /// The first line of `log` that says it ran out of memory (up to 300 characters), or nil.
    static func outOfMemoryLine(_ log: String) -> String? {
        let lowered = log.lowercased()
        for phrase in ["out of memory", "out of gpu memory", "out of host memory", "out of device memory", "could not allocate memory",
                       "cannot allocate memory", "bad_alloc", "memory allocation failed"] {
            if let range = lowered.range(of: phrase) {
                let line = lowered[..<range.lowerBound].split(separator: "\n", omittingEmptySubsequences: false).count - 1
                let text = log.split(separator: "\n", omittingEmptySubsequences: false)[line]
                return String(text.trimmingCharacters(in: .whitespaces).prefix(300))
            }
        }
        return nil
    }

    /// Runs `executable` with `arguments`, output to `log`, under an address-space limit (through
    /// `/bin/sh`'s `ulimit -v`, which sets RLIMIT_AS and then `exec`s the program, so the ending
    /// is the program's own).
    static func spawn(_ executable: URL, _ arguments: [String], log: URL, memoryLimit: Int?,
                      interruption: Interruption) throws -> Ending {
        guard FileManager.default.createFile(atPath: log.path, contents: nil) else {
            throw FrugalError.invalidArgument("\(log.path): cannot create the run's log")
        }
        let output = try FileHandle(forWritingTo: log)
        defer { try? output.close() }
        let process = Process()
        if let memoryLimit {
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            let kibibytes = (memoryLimit + 1023) / 1024
            process.arguments = ["-c", "ulimit -v \(kibibytes) && exec \"$@\"", "sh", executable.path] + arguments
        } else {
            process.executableURL = executable
            process.arguments = arguments
        }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = output
        process.standardError = output
        try interruption.during(process) {
            try process.run()
            process.waitUntilExit()
        }
        switch process.terminationReason {
        case .exit: return .exit(process.terminationStatus)
        case .uncaughtSignal: return .signal(process.terminationStatus)
        @unknown default: return .exit(process.terminationStatus)
        }
    }

    /// The last 64 KiB of a log.
    static func tail(of url: URL) -> String {
        guard let handle = try? FileHandle(forReadingFrom: url) else { return "" }
        defer { try? handle.close() }
        let end = (try? handle.seekToEnd()) ?? 0
        try? handle.seek(toOffset: end > 65536 ? end - 65536 : 0)
        let data = (try? handle.readToEnd()) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    /// The last `n` non-empty lines of `text` (progress lines split at carriage returns), joined by " | ".
    static func lastLines(_ text: String, _ n: Int) -> String? {
        let lines = text.split(whereSeparator: { $0 == "\n" || $0 == "\r" })
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        return lines.isEmpty ? nil : lines.suffix(n).joined(separator: " | ")
    }
}

/// While a child runs, SIGINT and SIGTERM kill it and mark the sweep interrupted; before and after,
/// the signals' previous handlers are in place.
final class Interruption: @unchecked Sendable {
    private let lock = NSLock()
    private var set = false

    var isSet: Bool {
        lock.lock(); defer { lock.unlock() }
        return set
    }

    func during(_ process: Process, _ body: () throws -> Void) throws {
        var sources = [DispatchSourceSignal]()
        var previous = [(Int32, (@convention(c) (Int32) -> Void)?)]()
        for number in [SIGINT, SIGTERM] {
            previous.append((number, signal(number, SIG_IGN)))
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { [weak self, weak process] in
                guard let self else { return }
                self.lock.lock(); self.set = true; self.lock.unlock()
                if let process, process.isRunning { kill(process.processIdentifier, SIGKILL) }
            }
            source.resume()
            sources.append(source)
        }
        defer {
            for source in sources { source.cancel() }
            for (number, handler) in previous { signal(number, handler) }
        }
        try body()
    }
}
