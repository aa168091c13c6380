// The CUDA backend: what can be checked without a GPU (the device report, the allocator's
// sizes, kernel arguments), and every op against the CPU when a GPU is present.
import XCTest
import FrugalCore
import FrugalCPU
@testable import FrugalCUDA

final class CUDABackendTests: XCTestCase {
    func testTheDeviceReportSaysWhyThereIsNoGPU() {
        let report = CUDADeviceReport.probe()
        if report.hasGPU {
            XCTAssertFalse(report.gpus[0].name.isEmpty)
            XCTAssertTrue(report.gpus[0].architecture.hasPrefix("sm_"))
        } else {
            XCTAssertNotNil(report.problem)
            XCTAssertTrue(report.description.hasPrefix("No NVIDIA GPU: "), report.description)
        }
        XCTAssertEqual(report.libraries.map(\.name), ["CUDA driver", "NVRTC", "cuBLASLt", "NVML"])
        XCTAssertNoThrow(try JSONEncoder().encode(report))
    }

    func testTheBackendFailsWithATypedErrorWithoutADriver() throws {
        if CUDADeviceReport.probe().hasGPU { throw XCTSkip("a GPU is present") }
        XCTAssertThrowsError(try CUDABackend()) { error in
            XCTAssertTrue(error is CUDAError, "\(error)")
        }
    }

    func testAllocatorSizesRoundToFewBuckets() {
        XCTAssertEqual(CUDAAllocator.roundedSize(0), 512)
        XCTAssertEqual(CUDAAllocator.roundedSize(513), 1024)
        XCTAssertEqual(CUDAAllocator.roundedSize((1 << 20) - 1), 1 << 20)
        XCTAssertEqual(CUDAAllocator.roundedSize((1 << 20) + 1), 2 << 20)
        XCTAssertEqual(CUDAAllocator.roundedSize(5 << 20), 6 << 20)
    }

    func testKernelArgumentsFillTheLowBytesOfTheirSlot() {
        XCTAssertEqual(Int32(-1).kernelSlot, 0xFFFF_FFFF)
        XCTAssertEqual(Float(1).kernelSlot, 0x3F80_0000)
        XCTAssertEqual(Int64(-1).kernelSlot, UInt64.max)
        XCTAssertEqual(UInt64(0xDEAD_BEEF_0000).kernelSlot, 0xDEAD_BEEF_0000)
    }

    func testOutOfMemorySaysHowMuchAndPointsToPlan() {
        let text = "\(CUDAError.outOfMemory(requested: 3 << 30, category: "activations", free: 1 << 30, total: 80 << 30))"
        XCTAssertEqual(text, "out of GPU memory: asked 3.00 GiB for activations, 1.00 GiB free of 80.00 GiB; `frugal plan` suggests settings that fit")
    }

    /// Every op forward and backward against the CPU backend (runs only where there is a GPU).
    func testEveryOpMatchesTheCPUOnTheGPU() throws {
        guard CUDADeviceReport.probe().hasGPU else { throw XCTSkip("no NVIDIA GPU here") }
        let results = runGPUChecks(reference: CPUBackend())
        XCTAssertGreaterThan(results.count, 50)
        for result in results where !result.passed { XCTFail("\(result)") }
    }
}

final class GPUCheckHarnessTests: XCTestCase {
    /// The gpu-check harness itself, CPU against CPU: every check runs and agrees exactly.
    func testEveryCheckRunsAndPassesCPUAgainstCPU() {
        var checker = GPUChecker(gpu: CPUBackend(), cpu: CPUBackend(), report: { _ in })
        checker.run()
        checker.checkActivationDtypes()
        XCTAssertGreaterThan(checker.results.count, 50)
        for result in checker.results {
            XCTAssertTrue(result.passed && result.maxError == 0, "\(result)")
        }
        XCTAssertTrue(checker.results.contains { $0.name.hasPrefix("attention backward") })
        XCTAssertTrue(checker.results.contains { $0.name.hasPrefix("rmsNorm bf16 activations") })
        XCTAssertTrue(checker.results.contains { $0.name.contains("copy stream") })
    }

    /// `--only`: the checks whose names contain the text, and no others.
    func testOnlyRunsTheMatchingChecks() {
        var checker = GPUChecker(gpu: CPUBackend(), cpu: CPUBackend(), report: { _ in }, only: "attention")
        checker.run()
        checker.checkActivationDtypes()
        XCTAssertGreaterThan(checker.results.count, 10)
        XCTAssertTrue(checker.results.allSatisfy { $0.name.contains("attention") }, "\(checker.results.map(\.name))")
    }
}
