// InstructionSetCheck: on x86-64, FrugalCore and FrugalCPU are compiled for x86-64-v3 (Package.swift's
// `vectorISA`); before their code runs, `frugal` checks that this CPU has those instructions.
import Foundation

enum InstructionSetCheck {
    /// The `/proc/cpuinfo` flags of the instructions the compiler may emit for `-target-cpu haswell`.
    static let required = ["avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "abm", "movbe", "popcnt"]

    /// The required flags missing from the first `flags` line of `cpuinfo`; [] when none is
    /// missing or the text has no such line (not Linux, or no x86 flags to judge by).
    static func missing(cpuinfo: String) -> [String] {
        guard let line = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }),
              let colon = line.firstIndex(of: ":") else { return [] }
        let flags = Set(line[line.index(after: colon)...].split(separator: " ").map(String.init))
        return required.filter { !flags.contains($0) }
    }

    /// Exits with a clear line when this build needs instructions the CPU lacks, instead of
    /// dying of an illegal instruction mid-run. `FRUGAL_CPUINFO` names another file to read
    /// than `/proc/cpuinfo` (for testing this message).
    static func run() {
        #if FRUGAL_X86_64_V3
        let path = ProcessInfo.processInfo.environment["FRUGAL_CPUINFO"] ?? "/proc/cpuinfo"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return }
        let absent = missing(cpuinfo: text)
        guard !absent.isEmpty else { return }
        FileHandle.standardError.write(Data("""
            error: this frugal was built for x86-64-v3 CPUs (AVX2, FMA: Haswell, Zen and later), and this CPU lacks \
            \(absent.joined(separator: ", ")). Rebuild it for any x86-64 with `FRUGAL_PORTABLE=1 swift build -c release`.

            """.utf8))
        exit(1)
        #endif
    }
}
