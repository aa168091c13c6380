// End-to-end: the real `frugal` executable given bad model files answers with one clear line.
import Foundation
import XCTest

final class BadInputTests: XCTestCase {
    /// The built `frugal` beside the test bundle.
    static let executable: URL = {
        var folder = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        if folder.path.hasSuffix(".xctest/Contents/MacOS") { folder = folder.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent() }
        return folder.appendingPathComponent("frugal")
    }()

    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("FrugalModelsTests/Fixtures/models")

    /// Runs frugal with `arguments`; returns exit status, standard error and standard output
    /// (through a file, so that neither pipe can fill while the other is read).
    @discardableResult
    static func frugal(_ arguments: [String], environment: [String: String] = [:]) throws
        -> (status: Int32, stderr: String, stdout: String) {
        let process = Process()
        process.executableURL = Self.executable
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let errors = Pipe()
        let outputFile = FileManager.default.temporaryDirectory.appendingPathComponent("frugal-stdout-\(UUID().uuidString)")
        _ = FileManager.default.createFile(atPath: outputFile.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: outputFile) }
        let output = try FileHandle(forWritingTo: outputFile)
        defer { try? output.close() }
        process.standardError = errors
        process.standardOutput = output
        try process.run()
        let data = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self), try String(contentsOf: outputFile, encoding: .utf8))
    }

    private var scratch: URL!

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("frugal-bad-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

    /// Asserts a failure with exactly one line on stderr, mentioning every fragment.
    private func assertOneLineError(_ arguments: [String], environment: [String: String] = [:], mentions fragments: [String],
                                    file: StaticString = #filePath, line: UInt = #line) throws {
        let (status, stderr, _) = try Self.frugal(arguments, environment: environment)
        XCTAssertEqual(status, 1, "exit status; stderr: \(stderr)", file: file, line: line)
        let lines = stderr.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, "expected one line, got: \(stderr)", file: file, line: line)
        for fragment in fragments {
            XCTAssertTrue(stderr.contains(fragment), "'\(fragment)' not in: \(stderr)", file: file, line: line)
        }
    }

    func testTruncatedGGUF() throws {
        let path = scratch.appendingPathComponent("cut.gguf")
        var bytes = Data("GGUF".utf8)
        bytes.append(contentsOf: [3, 0, 0, 0, 1])  // version 3, then a tensor count cut short
        try bytes.write(to: path)
        try assertOneLineError(["info", "--model", path.path], mentions: [path.path])
    }

    func testNotAModelFile() throws {
        let path = scratch.appendingPathComponent("notes.gguf")
        try Data("hello, this is not a model".utf8).write(to: path)
        try assertOneLineError(["info", "--model", path.path], mentions: [path.path, "magic"])
    }

    func testUnknownArchitectureNamesWhatItFound() throws {
        let folder = scratch.appendingPathComponent("bert")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try Data(#"{"model_type": "bert", "hidden_size": 64}"#.utf8).write(to: folder.appendingPathComponent("config.json"))
        try assertOneLineError(["info", "--model", folder.path], mentions: ["bert", "config.json"])
    }

    func testCorruptSafetensors() throws {
        let folder = scratch.appendingPathComponent("corrupt")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let source = Self.fixtures.appendingPathComponent("llama3")
        try FileManager.default.copyItem(at: source.appendingPathComponent("config.json"), to: folder.appendingPathComponent("config.json"))
        var weights = try Data(contentsOf: source.appendingPathComponent("model.safetensors"))
        weights.count = weights.count / 2
        try weights.write(to: folder.appendingPathComponent("model.safetensors"))
        try assertOneLineError(["info", "--model", folder.path], mentions: ["model.safetensors"])
    }

    func testMissingTokenizer() throws {
        let folder = Self.fixtures.appendingPathComponent("llama3")
        try assertOneLineError(["generate", "--model", folder.path, "Hello"], mentions: ["tokenizer.json", folder.path])
    }

    /// A power cap needs a GPU: on the CPU the run stops before it starts, saying so.
    func testPowerCapOnTheCPUIsRefused() throws {
        let model = Self.fixtures.appendingPathComponent("llama3").path
        try assertOneLineError(["train", "--device", "cpu", "--model", model, "--power-cap", "300", "--output", scratch.path],
                               mentions: ["--power-cap needs a GPU"])
    }

    /// A build for x86-64-v3 on a CPU without AVX2 and FMA names what is missing and how to
    /// rebuild, instead of dying of an illegal instruction.
    func testCPUWithoutAVX2IsNamed() throws {
        #if FRUGAL_X86_64_V3
        let cpuinfo = scratch.appendingPathComponent("cpuinfo")
        try "processor\t: 0\nflags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 popcnt avx\n".write(to: cpuinfo, atomically: true, encoding: .utf8)
        try assertOneLineError(["info"], environment: ["FRUGAL_CPUINFO": cpuinfo.path], mentions: ["avx2, fma", "FRUGAL_PORTABLE=1"])
        #else
        throw XCTSkip("frugal was built for any CPU of its architecture")
        #endif
    }

    func testMissingModel() throws {
        try assertOneLineError(["info", "--model", scratch.appendingPathComponent("nothing.gguf").path], mentions: ["nothing.gguf"])
    }

    func testInfoOfATinyModel() throws {
        let (status, _, text) = try Self.frugal(["info", "--model", Self.fixtures.appendingPathComponent("gemma").path])
        XCTAssertEqual(status, 0)
        XCTAssertTrue(text.contains("gemma"), text)
        XCTAssertTrue(text.contains("weights"), text)
    }
}
