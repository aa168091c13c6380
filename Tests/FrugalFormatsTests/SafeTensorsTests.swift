// Tests of the safetensors reader, writer and model folder: round trips, the transformers
// fixtures, and one malformed file per check.
import Foundation
import XCTest
import FrugalCore
@testable import FrugalFormats

final class SafeTensorsTests: XCTestCase {
    private var folder: URL!

    /// The tiny transformers models, which live in the FrugalModelsTests target's fixtures.
    static let modelFixtures = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("FrugalModelsTests/Fixtures/models")

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("safetensors-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: folder)
    }

    // MARK: - Round trips

    func testRoundTripOfFloatTypesAndMetadata() throws {
        let values: [Float] = [0, 1, -2.5, 3.14159, 1e-3, -65504, 0.1, 7]
        let url = folder.appendingPathComponent("t.safetensors")
        try SafeTensorsWriter.write([
            (name: "z.f32", dtype: .f32, shape: [2, 4], bytes: try SafeTensorsWriter.bytes(of: values, as: .f32)),
            (name: "a.bf16", dtype: .bf16, shape: [8], bytes: try SafeTensorsWriter.bytes(of: values, as: .bf16)),
            (name: "m.f16", dtype: .f16, shape: [4, 2], bytes: try SafeTensorsWriter.bytes(of: values, as: .f16)),
            (name: "empty", dtype: .f32, shape: [0, 3], bytes: []),
        ], metadata: ["format": "pt", "note": "quote \" and \\ and\nnewline"], to: url)

        let file = try SafeTensorsFile(url: url)
        XCTAssertEqual(file.names, ["a.bf16", "empty", "m.f16", "z.f32"])
        XCTAssertEqual(file.metadata, ["format": "pt", "note": "quote \" and \\ and\nnewline"])
        XCTAssertEqual(try file.info("z.f32").dtype, .f32)
        XCTAssertEqual(try file.info("z.f32").shape, [2, 4])
        XCTAssertEqual(try file.info("m.f16").dtype, .f16)
        XCTAssertEqual(try file.info("m.f16").shape, [4, 2])
        XCTAssertEqual(try file.info("a.bf16").dtype, .bf16)
        XCTAssertEqual(try file.floats("z.f32"), values)
        XCTAssertEqual(try file.floats("m.f16"), values.map { HalfPrecision.round($0, to: .f16) })
        XCTAssertEqual(try file.floats("a.bf16"), values.map { HalfPrecision.round($0, to: .bf16) })
        XCTAssertEqual(try file.floats("empty"), [])
        XCTAssertEqual(Array(try file.data("m.f16")), try SafeTensorsWriter.bytes(of: values, as: .f16))

        // Header padded to 8 bytes; data laid out as the Python library does: F32, BF16, F16,
        // by name within a dtype.
        let bytes = try Data(contentsOf: url)
        let headerLength = bytes.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        XCTAssertEqual(headerLength % 8, 0)
        XCTAssertEqual(bytes.count, 8 + Int(headerLength) + 16 + 16 + 32)
        let header = String(decoding: bytes[8..<(8 + Int(headerLength))], as: UTF8.self)
        XCTAssertTrue(header.hasPrefix(#"{"__metadata__":{"format":"pt","note":"quote \" and \\ and\nnewline"},"empty":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"z.f32":{"dtype":"F32","shape":[2,4],"data_offsets":[0,32]},"a.bf16":{"dtype":"BF16","shape":[8],"data_offsets":[32,48]},"m.f16":{"dtype":"F16","shape":[4,2],"data_offsets":[48,64]}}"#), header)
    }

    func testWriteReplacesAnExistingFileAndLeavesNoTemporaryFile() throws {
        let url = folder.appendingPathComponent("w.safetensors")
        try SafeTensorsWriter.write([(name: "x", dtype: .f32, shape: [1], bytes: try SafeTensorsWriter.bytes(of: [1], as: .f32))],
                                    metadata: nil, to: url)
        try SafeTensorsWriter.write([(name: "y", dtype: .f32, shape: [2], bytes: try SafeTensorsWriter.bytes(of: [2, 3], as: .f32))],
                                    metadata: nil, to: url)
        let file = try SafeTensorsFile(url: url)
        XCTAssertEqual(file.names, ["y"])
        XCTAssertEqual(file.metadata, [:])
        XCTAssertEqual(try file.floats("y"), [2, 3])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.path), ["w.safetensors"])
    }

    func testWriterRejectsInconsistentTensors() throws {
        let url = folder.appendingPathComponent("bad.safetensors")
        XCTAssertThrowsError(try SafeTensorsWriter.write([(name: "x", dtype: .f32, shape: [3], bytes: [0, 0, 0, 0])], metadata: nil, to: url))
        XCTAssertThrowsError(try SafeTensorsWriter.write([(name: "x", dtype: .f32, shape: [1], bytes: [0, 0, 0, 0]),
                                                         (name: "x", dtype: .f32, shape: [1], bytes: [0, 0, 0, 0])], metadata: nil, to: url))
        XCTAssertThrowsError(try SafeTensorsWriter.write([(name: "q", dtype: .q8_0, shape: [32], bytes: Array(repeating: 0, count: 34))], metadata: nil, to: url))
        XCTAssertFalse(FileManager.default.fileExists(atPath: url.path))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.path), [])
    }

    // MARK: - Fixtures from transformers

    func testReadsTransformersModelFiles() throws {
        let llama = Self.modelFixtures.appendingPathComponent("llama3")
        let file = try SafeTensorsFile(url: llama.appendingPathComponent("model.safetensors"))
        XCTAssertEqual(file.metadata["format"], "pt")
        XCTAssertEqual(file.names.count, 21)
        XCTAssertEqual(try file.info("model.embed_tokens.weight").shape, [256, 64])
        XCTAssertEqual(try file.info("model.layers.0.self_attn.k_proj.weight").shape, [32, 64])
        XCTAssertEqual(try file.info("lm_head.weight").dtype, .f32)
        let norm = try file.floats("model.layers.0.input_layernorm.weight")
        XCTAssertEqual(norm.count, 64)
        XCTAssertEqual(norm[0], 1.0070563554763794, accuracy: 1e-7)

        // Tied embeddings: transformers saves only the embedding.
        let qwen = try SafeTensorsFolder(folder: Self.modelFixtures.appendingPathComponent("qwen2"))
        XCTAssertFalse(qwen.contains("lm_head.weight"))
        XCTAssertEqual(try qwen.info("model.layers.0.self_attn.q_proj.bias").shape, [32])

        let expected = try SafeTensorsFile(url: llama.appendingPathComponent("expected.safetensors"))
        XCTAssertEqual(try expected.info("logits").shape, [2, 12, 256])
        XCTAssertEqual(try expected.info("input_ids").shape, [2, 12])
    }

    func testFolderOpensSingleFile() throws {
        let llama = Self.modelFixtures.appendingPathComponent("llama3")
        let weights = try SafeTensorsFolder(folder: llama)
        let file = try SafeTensorsFile(url: llama.appendingPathComponent("model.safetensors"))
        XCTAssertEqual(weights.names, file.names)
        XCTAssertEqual(try weights.floats("model.norm.weight"), try file.floats("model.norm.weight"))

        for model in ["llama3", "qwen2", "gemma", "phi3", "opt", "opt-prenorm", "gpt2"] {
            let weights = try SafeTensorsFolder(folder: Self.modelFixtures.appendingPathComponent(model))
            XCTAssertFalse(weights.names.isEmpty, model)
            for name in weights.names {
                let (dtype, shape) = try weights.info(name)
                XCTAssertEqual(dtype, .f32, "\(model) \(name)")
                XCTAssertEqual(try weights.floats(name).count, shape.count, "\(model) \(name)")
            }
        }
    }

    func testFolderOpensShardsFromIndex() throws {
        try SafeTensorsWriter.write([(name: "a", dtype: .f32, shape: [1], bytes: try SafeTensorsWriter.bytes(of: [1], as: .f32))],
                                    metadata: nil, to: folder.appendingPathComponent("model-00001-of-00002.safetensors"))
        try SafeTensorsWriter.write([(name: "b", dtype: .bf16, shape: [2], bytes: try SafeTensorsWriter.bytes(of: [2, 3], as: .bf16))],
                                    metadata: nil, to: folder.appendingPathComponent("model-00002-of-00002.safetensors"))
        let index = folder.appendingPathComponent("model.safetensors.index.json")
        try Data(#"{"metadata": {"total_size": 8}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#.utf8)
            .write(to: index)
        let weights = try SafeTensorsFolder(folder: folder)
        XCTAssertEqual(weights.names, ["a", "b"])
        XCTAssertEqual(weights.files.count, 2)
        XCTAssertEqual(try weights.floats("b"), [2, 3])
        XCTAssertEqual(try weights.file(containing: "a").path, folder.appendingPathComponent("model-00001-of-00002.safetensors").path)
        XCTAssertThrowsError(try weights.info("c")) { error in
            XCTAssertEqual(error as? FrugalError, .missingTensor(name: "c", path: folder.path))
        }

        try Data(#"{"weight_map": {"a": "model-00002-of-00002.safetensors"}}"#.utf8).write(to: index)
        assertMalformed(try SafeTensorsFolder(folder: folder), path: index.path, mentions: ["'a'", "not in its shard"])
        try Data(#"{"weight_map": {"a": "../elsewhere.safetensors"}}"#.utf8).write(to: index)
        assertMalformed(try SafeTensorsFolder(folder: folder), path: index.path, mentions: ["'a'", "not a file name"])
    }

    func testFolderWithoutWeightsIsMissingFile() throws {
        XCTAssertThrowsError(try SafeTensorsFolder(folder: folder)) { error in
            guard case .missingFile(let path, _) = error as? FrugalError else { return XCTFail("\(error)") }
            XCTAssertEqual(path, folder.path)
        }
    }

    // MARK: - Malformed files

    func testMissingFile() {
        let url = folder.appendingPathComponent("absent.safetensors")
        XCTAssertThrowsError(try SafeTensorsFile(url: url)) { error in
            XCTAssertEqual(error as? FrugalError, .missingFile(path: url.path, what: "safetensors file"))
        }
    }

    func testFileShorterThanHeaderLength() throws {
        let url = folder.appendingPathComponent("short.safetensors")
        try Data([1, 2, 3]).write(to: url)
        assertMalformed(try SafeTensorsFile(url: url), path: url.path, mentions: ["3 bytes", "8-byte header length"])
    }

    func testHeaderLengthPastTheEnd() throws {
        let url = try raw(#"{}"#, declaredLength: 1000)
        assertMalformed(try SafeTensorsFile(url: url), path: url.path, mentions: ["header length 1000", "exceeds the file"])
        let huge = try raw(#"{}"#, declaredLength: UInt64.max)
        assertMalformed(try SafeTensorsFile(url: huge), path: huge.path, mentions: ["header length \(UInt64.max)"])
    }

    func testBadJSON() throws {
        let url = try raw(#"{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]"#, dataBytes: 4)
        assertMalformed(try SafeTensorsFile(url: url), path: url.path, mentions: ["invalid JSON"])
        let trailing = try raw(#"{"a": 1,}"#)
        assertMalformed(try SafeTensorsFile(url: trailing), path: trailing.path, mentions: ["invalid JSON"])
        let notObject = try raw(#"[1, 2]"#)
        assertMalformed(try SafeTensorsFile(url: notObject), path: notObject.path, mentions: ["not a JSON object"])
    }

    func testOffsetsOutOfRange() throws {
        let url = try raw(#"{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}"#, dataBytes: 8)
        assertMalformed(try SafeTensorsFile(url: url), path: url.path, mentions: ["tensor 'w'", "past the data section"])
        let reversed = try raw(#"{"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}}"#, dataBytes: 8)
        assertMalformed(try SafeTensorsFile(url: reversed), path: reversed.path, mentions: ["tensor 'w'", "begin after end"])
        let negative = try raw(#"{"w": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}}"#, dataBytes: 8)
        assertMalformed(try SafeTensorsFile(url: negative), path: negative.path, mentions: ["tensor 'w'", "data_offsets"])
    }

    func testOverlappingTensors() throws {
        let url = try raw(#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}"#,
                          dataBytes: 12)
        assertMalformed(try SafeTensorsFile(url: url), path: url.path, mentions: ["'a'", "'b'", "overlap"])
    }

    func testDTypeShapeAndSizeMismatches() throws {
        let unknown = try raw(#"{"w": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}}"#, dataBytes: 8)
        assertMalformed(try SafeTensorsFile(url: unknown), path: unknown.path, mentions: ["tensor 'w'", "unsupported dtype Q4"])
        let size = try raw(#"{"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}"#, dataBytes: 8)
        assertMalformed(try SafeTensorsFile(url: size), path: size.path, mentions: ["tensor 'w'", "hold 8 bytes", "needs 12"])
        let half = try raw(#"{"w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 4]}}"#, dataBytes: 8)
        assertMalformed(try SafeTensorsFile(url: half), path: half.path, mentions: ["tensor 'w'", "needs 8"])
        let shape = try raw(#"{"w": {"dtype": "F32", "shape": [2, 1.5], "data_offsets": [0, 8]}}"#, dataBytes: 8)
        assertMalformed(try SafeTensorsFile(url: shape), path: shape.path, mentions: ["tensor 'w'", "shape"])
        let overflow = try raw(#"{"w": {"dtype": "F32", "shape": [4611686018427387904, 4], "data_offsets": [0, 8]}}"#, dataBytes: 8)
        assertMalformed(try SafeTensorsFile(url: overflow), path: overflow.path, mentions: ["tensor 'w'", "overflows"])
        let missing = try raw(#"{"w": {"shape": [2], "data_offsets": [0, 8]}}"#, dataBytes: 8)
        assertMalformed(try SafeTensorsFile(url: missing), path: missing.path, mentions: ["tensor 'w'", "missing dtype"])
    }

    func testDuplicateNames() throws {
        let url = try raw(#"{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}"#,
                          dataBytes: 8)
        assertMalformed(try SafeTensorsFile(url: url), path: url.path, mentions: ["duplicate name 'w'"])
        // Names that Swift's String equality merges ("é" precomposed and decomposed).
        let equivalent = try raw(#"{"\u00e9": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "e\u0301": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}"#,
                                 dataBytes: 8)
        assertMalformed(try SafeTensorsFile(url: equivalent), path: equivalent.path, mentions: ["duplicate name"])
    }

    func testJSONKeysDifferingInNormalizationStayApart() throws {
        let text = Array(#"{"\u00e9": 1, "e\u0301": 2}"#.utf8)
        let value = try text.withUnsafeBytes { try JSONValue.parse($0, path: "t.json", baseOffset: 0) }
        guard case let .object(members) = value else { return XCTFail("\(value)") }
        XCTAssertEqual(members.map { Array($0.key.utf8) }, [[0xC3, 0xA9], [0x65, 0xCC, 0x81]])
    }

    func testIntegerTensorsOpenButCannotBeRead() throws {
        let url = try raw(#"{"ids": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [16, 20]}}"#,
                          dataBytes: 20)
        let file = try SafeTensorsFile(url: url)
        XCTAssertEqual(file.names, ["ids", "w"])
        XCTAssertEqual(try file.floats("w"), [0])
        assertMalformed(try file.info("ids"), path: url.path, mentions: ["tensor 'ids'", "I64"])
        assertMalformed(try file.floats("ids"), path: url.path, mentions: ["tensor 'ids'", "I64"])
    }

    func testMetadataMustHoldStrings() throws {
        let url = try raw(#"{"__metadata__": {"step": 3}}"#)
        assertMalformed(try SafeTensorsFile(url: url), path: url.path, mentions: ["__metadata__", "'step'"])
    }

    // MARK: - Helpers

    /// A file with `header` as its JSON, `dataBytes` zero bytes after it, and a declared header
    /// length that defaults to the true one.
    private func raw(_ header: String, dataBytes: Int = 0, declaredLength: UInt64? = nil) throws -> URL {
        let json = Array(header.utf8)
        var bytes = withUnsafeBytes(of: (declaredLength ?? UInt64(json.count)).littleEndian) { Array($0) }
        bytes += json + Array(repeating: 0, count: dataBytes)
        let url = folder.appendingPathComponent("raw-\(UUID().uuidString).safetensors")
        try Data(bytes).write(to: url)
        return url
    }

    /// Asserts that `body` throws `FrugalError.malformedFile` for `path` with a problem that
    /// mentions every string in `mentions`.
    private func assertMalformed<T>(_ body: @autoclosure () throws -> T, path: String, mentions: [String],
                                    file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            guard case let .malformedFile(foundPath, problem, _) = error as? FrugalError else {
                return XCTFail("expected malformedFile, got \(error)", file: file, line: line)
            }
            XCTAssertEqual(foundPath, path, file: file, line: line)
            for text in mentions {
                XCTAssertTrue(problem.contains(text), "'\(problem)' does not mention '\(text)'", file: file, line: line)
            }
        }
    }
}
