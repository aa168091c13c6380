// SweepPlan: a sweep's configurations — a baseline plus a list or a factorial of `frugal train`
// option sets — expanded from its specification, with a name for each run.
import Foundation
import FrugalCore

/// One level of a factor: the option's value, and other options that go with it
/// (e.g. `grad-accum: 8` with `steps: 3`, so every level trains on the same data).
public struct SweepLevel: Codable, Sendable, Equatable {
    public var value: String
    public var options: [String: String]

    public init(_ value: String, options: [String: String] = [:]) {
        self.value = value
        self.options = options
    }
}

/// An option that a factorial sweep varies, with its levels in order.
public struct SweepFactor: Codable, Sendable, Equatable {
    /// The `frugal train` long option name ("grad-accum").
    public var name: String
    public var levels: [SweepLevel]

    public init(name: String, levels: [SweepLevel]) {
        self.name = name
        self.levels = levels
    }
}

/// One configuration of a sweep: the options of its `frugal train` command.
public struct SweepConfiguration: Codable, Sendable, Equatable {
    /// Names the run's files; letters, digits, `.`, `_` and `-` only.
    public var name: String
    /// `frugal train` long option names and values; "true" is a flag, "false" leaves it off.
    public var options: [String: String]
    /// For a factorial cell: each factor's level value.
    public var levels: [String: String]
    /// The address-space limit of the run's process, bytes (RLIMIT_AS); nil for none.
    public var memoryLimit: Int?

    public init(name: String, options: [String: String], levels: [String: String] = [:], memoryLimit: Int? = nil) {
        self.name = name
        self.options = options
        self.levels = levels
        self.memoryLimit = memoryLimit
    }

    /// The options as command-line arguments, sorted by name so a run's command is stable.
    public var arguments: [String] {
        options.sorted { $0.key < $1.key }.flatMap { key, value -> [String] in
            switch value.lowercased() {
            case "true": ["--\(key)"]
            case "false": []
            default: ["--\(key)", value]
            }
        }
    }
}

/// What a sweep file says, before expansion.
public struct SweepSpecification: Sendable {
    /// Which configuration the ratios compare against.
    public enum Baseline: Sendable, Equatable {
        /// A configuration of the sweep, by name.
        case named(String)
        /// These options over `common`: a cell of the factorial when it matches one, else a run of its own.
        case options([String: String])
    }

    /// Options every run gets (a configuration's own options win).
    public var common: [String: String] = [:]
    /// Varied together: every combination of levels is a configuration (first factor outermost).
    public var factors: [SweepFactor] = []
    /// Configurations listed one by one, after the factorial's.
    public var runs: [SweepConfiguration] = []
    /// Nil: the first configuration.
    public var baseline: Baseline?
    public var repeats = 1
    /// The address-space limit of each run's process, bytes, unless a configuration sets `memory-limit`.
    public var memoryLimit: Int?

    public init() {}

    /// Options the sweep sets itself, so configurations cannot.
    public static let reservedOptions: Set<String> = ["output", "result", "config", "resume"]

    /// Expands the factorial and the list into named configurations and finds the baseline.
    /// - Throws: `FrugalError.invalidArgument` for an empty sweep, a factor with no levels, a
    ///   reserved option, a bad memory limit, names that collide, or a baseline that names no run.
    public func plan() throws -> SweepPlan {
        guard repeats >= 1 else { throw FrugalError.invalidArgument("sweep: repeats must be at least 1") }
        var configurations = [SweepConfiguration]()
        if !factors.isEmpty {
            for factor in factors where factor.levels.isEmpty {
                throw FrugalError.invalidArgument("sweep: factor '\(factor.name)' has no levels")
            }
            var cells: [[(SweepFactor, SweepLevel)]] = [[]]
            for factor in factors {
                cells = cells.flatMap { cell in factor.levels.map { cell + [(factor, $0)] } }
            }
            for cell in cells {
                var options = common
                for (factor, level) in cell {
                    options.merge(level.options) { $1 }
                    options[factor.name] = level.value
                }
                let name = cell.map { Self.namePart($0.0.name, $0.1.value) }.joined(separator: "_")
                configurations.append(try configure(SweepConfiguration(
                    name: name, options: options, levels: Dictionary(uniqueKeysWithValues: cell.map { ($0.0.name, $0.1.value) }))))
            }
        }
        for (i, run) in runs.enumerated() {
            var run = run
            run.options = common.merging(run.options) { $1 }
            if run.name.isEmpty { run.name = "run\(i + 1)" }
            configurations.append(try configure(run))
        }
        var baselineName = configurations.first?.name
        switch baseline {
        case nil: break
        case let .named(name):
            guard configurations.contains(where: { $0.name == name }) else {
                throw FrugalError.invalidArgument("sweep: the baseline '\(name)' is not a configuration of the sweep")
            }
            baselineName = name
        case let .options(options):
            let candidate = try configure(SweepConfiguration(name: "baseline", options: common.merging(options) { $1 }))
            if let match = configurations.first(where: { $0.options == candidate.options && $0.memoryLimit == candidate.memoryLimit }) {
                baselineName = match.name
            } else {
                configurations.insert(candidate, at: 0)
                baselineName = candidate.name
            }
        }
        guard let baselineName else { throw FrugalError.invalidArgument("sweep: no configurations (give factors: or runs:)") }
        var seen = Set<String>()
        for c in configurations where !seen.insert(c.name).inserted {
            throw FrugalError.invalidArgument("sweep: two configurations are named '\(c.name)'")
        }
        return SweepPlan(configurations: configurations, factors: factors, baseline: baselineName, repeats: repeats)
    }

    /// Checks a configuration's options and takes its `memory-limit` out of them.
    private func configure(_ configuration: SweepConfiguration) throws -> SweepConfiguration {
        var c = configuration
        if let reserved = c.options.keys.sorted().first(where: Self.reservedOptions.contains) {
            throw FrugalError.invalidArgument("sweep: '\(reserved)' is set by the sweep for each run, not by its options")
        }
        guard c.name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }), !c.name.hasPrefix(".") else {
            throw FrugalError.invalidArgument("sweep: run name '\(c.name)' may hold only letters, digits, '.', '_' and '-'")
        }
        c.memoryLimit = memoryLimit
        if let text = c.options.removeValue(forKey: "memory-limit") {
            guard let bytes = ByteCount.parse(text) else {
                throw FrugalError.invalidArgument("sweep: memory-limit '\(text)' is not a byte count (e.g. 3GiB)")
            }
            c.memoryLimit = bytes
        }
        return c
    }

    /// A factorial cell's part of a run name: the value when it is a word ("bf16", "lora"), else
    /// the option and the value ("grad-accum8"); a flag is its name or "no-" its name.
    static func namePart(_ option: String, _ value: String) -> String {
        let part: String
        switch value.lowercased() {
        case "true": part = option
        case "false": part = "no-" + option
        default: part = value.first?.isLetter == true ? value : option + value
        }
        return String(part.map { $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) ? $0 : "-" })
    }
}

/// A sweep's configurations, as expanded; written beside its results as `sweep.json`.
public struct SweepPlan: Codable, Sendable, Equatable {
    public var configurations: [SweepConfiguration]
    public var factors: [SweepFactor]
    /// The baseline configuration's name.
    public var baseline: String
    public var repeats: Int

    public init(configurations: [SweepConfiguration], factors: [SweepFactor], baseline: String, repeats: Int) {
        self.configurations = configurations
        self.factors = factors
        self.baseline = baseline
        self.repeats = repeats
    }
}
