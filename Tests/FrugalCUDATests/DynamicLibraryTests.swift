// Finding libraries at run time, on a machine with or without CUDA.
import XCTest
@testable import FrugalCUDA

final class DynamicLibraryTests: XCTestCase {
    func testSearchFoldersIncludeCUDAHomeAndPythonWheels() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("site-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder.appendingPathComponent("nvidia/cuda_nvrtc/lib"),
                                                withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let folders = DynamicLibrary.searchFolders(environment: ["CUDA_HOME": "/opt/cuda", "FRUGAL_SITE_PACKAGES": folder.path])
        XCTAssertEqual(folders.first, "/opt/cuda/lib64")
        XCTAssertTrue(folders.contains("/usr/local/cuda/lib64"))
        XCTAssertTrue(folders.contains(folder.path + "/nvidia/cuda_nvrtc/lib"))
    }

    func testOpensALibraryOnTheDefaultPathAndFindsItsSymbols() throws {
        let libc = try XCTUnwrap(DynamicLibrary.open(["libc.so.6"], folders: []))
        XCTAssertNotNil(libc.symbol("malloc"))
        XCTAssertNil(libc.symbol("frugal_no_such_symbol"))
        XCTAssertNil(DynamicLibrary.open(["libfrugal-missing.so"], folders: ["/nonexistent"]))
    }
}
