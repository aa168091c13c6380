// The whole-model check of `frugal gpu-check`, run CPU against CPU: every check passes, the
// comparisons with transformers included, and a wrong reference is caught.
import XCTest
import FrugalCore
import FrugalCPU
@testable import FrugalModels

final class ModelAgreementTests: XCTestCase {
    static let fixtures = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("models")

    func testEveryCheckPassesOnTheCPU() throws {
        for name in ["llama3", "gpt2"] {
            let results = try ModelAgreement(folder: Self.fixtures.appendingPathComponent(name))
                .run(candidate: CPUBackend(), reference: CPUBackend())
            XCTAssertEqual(results.count, 7, name)
            for result in results { XCTAssertTrue(result.passed, result.description) }
        }
    }

    func testTargetsAreReadFromPEFTsAdapterNames() throws {
        let gpt2 = try ModelAgreement(folder: Self.fixtures.appendingPathComponent("gpt2"))
        XCTAssertEqual(ModelAgreement.loraTargets(gpt2.reference), ["down", "o", "up"])
        let llama = try ModelAgreement(folder: Self.fixtures.appendingPathComponent("llama3"))
        XCTAssertEqual(ModelAgreement.loraTargets(llama.reference), ["down", "gate", "k", "o", "q", "up", "v"])
    }

    func testAWrongValueFails() {
        let (error, index) = CheckResult.worstDifference([1, 2, 4], [1, 2.5, 4])
        XCTAssertEqual(error, 0.125, accuracy: 1e-9)
        XCTAssertEqual(index, 1)
        XCTAssertEqual(CheckResult.worstDifference([1, 2], [1, .nan]).error, .infinity)
        XCTAssertEqual(CheckResult.worstDifference([1, 2], [1]).error, .infinity)
    }
}
