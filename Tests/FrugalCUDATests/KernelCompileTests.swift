// Every kernel source compiles with NVRTC for sm_80 and sm_90, with no error and no warning.
// NVRTC needs no GPU: scripts/setup-nvrtc installs it (and the CUDA headers) from PyPI.
import XCTest
@testable import FrugalCUDA

final class KernelCompileTests: XCTestCase {
    static let architectures = ["sm_80", "sm_90"]

    /// NVRTC, or a skip saying how to get it.
    private func nvrtc() throws -> NVRTC {
        do { return try NVRTC() } catch {
            throw XCTSkip("\(error) — run scripts/setup-nvrtc to install it from PyPI")
        }
    }

    /// Compiled images by "file@architecture", shared by the tests (compiling all takes seconds).
    nonisolated(unsafe) private static var images = [String: [UInt8]]()

    func testEveryKernelCompilesCleanlyForAmpereAndHopper() throws {
        let nvrtc = try nvrtc()
        let sources = try KernelSources.locate()
        let compiler = try KernelCompiler(nvrtc: nvrtc, sources: sources, cacheFolder: nil)
        XCTAssertNotNil(compiler.includeFolder, "no folder with cuda_bf16.h found; run scripts/setup-nvrtc")
        let files = try sources.kernelFiles()
        XCTAssertGreaterThanOrEqual(files.count, 10, "kernel files: \(files)")
        for architecture in Self.architectures {
            for file in files {
                do {
                    let compiled = try compiler.compile(file, architecture: architecture, useCache: false)
                    XCTAssertFalse(compiled.image.isEmpty, "\(file) for \(architecture): empty CUBIN")
                    XCTAssertTrue(compiled.log.isEmpty, "\(file) for \(architecture) compiled with warnings:\n\(compiled.log)")
                    Self.images[file + "@" + architecture] = compiled.image
                } catch {
                    XCTFail("\(error)")
                }
            }
        }
    }

    /// The entry points CUDABackend launches exist in the compiled images (names are stable).
    func testTheBackendsEntryPointsAreInTheImages() throws {
        let nvrtc = try nvrtc()
        let compiler = try KernelCompiler(nvrtc: nvrtc, sources: try KernelSources.locate(), cacheFolder: nil)
        var images = [String: String]()
        for (file, name) in CUDAKernels.allEntryPoints {
            if images[file] == nil {
                let image = try Self.images[file + "@sm_90"] ?? compiler.compile(file, architecture: "sm_90", useCache: false).image
                images[file] = String(decoding: image.map { $0 == 0 ? 10 : $0 }, as: UTF8.self)
            }
            XCTAssertTrue(images[file]!.contains(name), "\(file) has no entry point \(name)")
        }
    }

    func testTheDiskCacheReturnsTheSameImage() throws {
        let nvrtc = try nvrtc()
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("kernels-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let compiler = try KernelCompiler(nvrtc: nvrtc, sources: try KernelSources.locate(), cacheFolder: folder)
        let first = try compiler.compile("sgd.cu", architecture: "sm_90")
        let second = try compiler.compile("sgd.cu", architecture: "sm_90")
        XCTAssertFalse(first.fromCache)
        XCTAssertTrue(second.fromCache)
        XCTAssertEqual(first.image, second.image)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.path).count, 1)
    }

    func testACompileErrorShowsTheLog() throws {
        let nvrtc = try nvrtc()
        XCTAssertThrowsError(try nvrtc.compile("extern \"C\" __global__ void broken() { undeclared_name = 1; }",
                                               name: "broken.cu", options: ["--gpu-architecture=sm_90"])) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("broken.cu") && text.contains("undeclared_name"), text)
        }
    }

    /// The clean-compile check above relies on NVRTC putting warnings in the log.
    func testWarningsReachTheLog() throws {
        let output = try nvrtc().compile("extern \"C\" __global__ void unused() { int x = 1; }", name: "unused.cu",
                                         options: ["--gpu-architecture=sm_90"])
        XCTAssertTrue(output.log.contains("warning"), output.log)
    }

    func testMissingLibrariesAreReportedPlainly() {
        let error = CUDAError.libraryNotFound(names: ["libcuda.so.1"], purpose: "no NVIDIA driver", searched: ["/a", "/b"])
        XCTAssertEqual("\(error)", "no NVIDIA driver: libcuda.so.1 not found (searched /a, /b and the default loader path)")
    }
}
