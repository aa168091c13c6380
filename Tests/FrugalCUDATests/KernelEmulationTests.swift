// The CUDA kernels run on the CPU: Tests/KernelEmulation/checks.cpp compiles Kernels/*.cu against
// cuda_emulation.h (threads, barriers, warp exchanges, shared memory) and checks them against C++
// references — indexing, masking and synchronization checked on a machine without a GPU, before
// scripts/gpu-check checks them on one.
import Foundation
import XCTest

final class KernelEmulationTests: XCTestCase {
    func testKernelsUnderCPUEmulation() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let emulation = root.appendingPathComponent("Tests/KernelEmulation")
        let compiler = try XCTUnwrap(Self.clang(), "no clang++ on PATH or beside swift (the Swift toolchain ships one)")
        let binary = FileManager.default.temporaryDirectory.appendingPathComponent("frugal-kernel-checks-\(getpid())")
        defer { try? FileManager.default.removeItem(at: binary) }
        let build = try Self.run(compiler, ["-std=c++20", "-O2", "-pthread", "-Wall", "-Wno-unused-function",
                                            "-I", emulation.path, "-I", root.appendingPathComponent("Sources/FrugalCUDA/Kernels").path,
                                            emulation.appendingPathComponent("checks.cpp").path, "-o", binary.path])
        XCTAssertEqual(build.status, 0, "clang++ failed:\n\(build.output)")
        guard build.status == 0 else { return }
        let checks = try Self.run(binary, [])
        let lines = checks.output.split(separator: "\n")
        print(checks.output)
        XCTAssertGreaterThanOrEqual(lines.filter { $0.hasPrefix("pass ") }.count, 51, checks.output)
        for line in lines where !line.hasPrefix("pass ") { XCTFail(String(line)) }
        XCTAssertEqual(checks.status, 0, "failed checks: \(checks.status)")
    }

    /// clang++ from PATH (where the Swift toolchain puts it beside swift).
    private static func clang() -> URL? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin"
        return path.split(separator: ":").map { URL(fileURLWithPath: String($0)).appendingPathComponent("clang++") }
            .first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }

    /// Runs `executable`, returning its exit status and its output (stdout and stderr together).
    private static func run(_ executable: URL, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process(), pipe = Pipe()
        process.executableURL = executable
        process.arguments = arguments
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
