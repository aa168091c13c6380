// SweepSpecification.plan: factorial expansion, run names, level options, the baseline, byte counts.
import Foundation
import XCTest
import FrugalCore
@testable import FrugalMeasure

final class SweepPlanTests: XCTestCase {
    /// The seeds' factorial: GA × MP × LoRA.
    static func seedsSpecification() -> SweepSpecification {
        var s = SweepSpecification()
        s.common = ["batch": "8", "steps": "3", "lora-targets": "q,k,v"]
        s.factors = [SweepFactor(name: "precision", levels: [SweepLevel("fp32"), SweepLevel("bf16")]),
                     SweepFactor(name: "grad-accum", levels: [SweepLevel("1", options: ["steps": "24"]), SweepLevel("8")]),
                     SweepFactor(name: "method", levels: [SweepLevel("lora"), SweepLevel("full")])]
        return s
    }

    func testFactorialExpandsEveryCombinationFirstFactorOutermost() throws {
        let plan = try Self.seedsSpecification().plan()
        XCTAssertEqual(plan.configurations.map(\.name), [
            "fp32_grad-accum1_lora", "fp32_grad-accum1_full", "fp32_grad-accum8_lora", "fp32_grad-accum8_full",
            "bf16_grad-accum1_lora", "bf16_grad-accum1_full", "bf16_grad-accum8_lora", "bf16_grad-accum8_full",
        ])
        let cell = plan.configurations[5]
        XCTAssertEqual(cell.options, ["batch": "8", "steps": "24", "lora-targets": "q,k,v",
                                      "precision": "bf16", "grad-accum": "1", "method": "full"])
        XCTAssertEqual(cell.levels, ["precision": "bf16", "grad-accum": "1", "method": "full"])
        XCTAssertEqual(plan.configurations[2].options["steps"], "3", "a level's options apply only with that level")
        XCTAssertEqual(plan.baseline, "fp32_grad-accum1_lora", "without a baseline, the first configuration")
        XCTAssertEqual(plan.repeats, 1)
    }

    func testArgumentsAreSortedFlagsBareFalseLeftOut() {
        let c = SweepConfiguration(name: "x", options: ["precision": "bf16", "checkpointing": "true", "packing": "false", "batch": "4"])
        XCTAssertEqual(c.arguments, ["--batch", "4", "--checkpointing", "--precision", "bf16"])
    }

    func testBaselineMatchesACellOrBecomesARunOfItsOwn() throws {
        var s = Self.seedsSpecification()
        s.baseline = .options(["precision": "fp32", "grad-accum": "8", "method": "full"])
        let matched = try s.plan()
        XCTAssertEqual(matched.baseline, "fp32_grad-accum8_full")
        XCTAssertEqual(matched.configurations.count, 8)

        s.baseline = .options(["precision": "fp32", "grad-accum": "8", "method": "full", "checkpointing": "true"])
        let extra = try s.plan()
        XCTAssertEqual(extra.baseline, "baseline")
        XCTAssertEqual(extra.configurations.count, 9)
        XCTAssertEqual(extra.configurations[0].options["checkpointing"], "true")
        XCTAssertEqual(extra.configurations[0].options["batch"], "8", "the baseline gets the common options")

        s.baseline = .named("bf16_grad-accum8_lora")
        XCTAssertEqual(try s.plan().baseline, "bf16_grad-accum8_lora")
        s.baseline = .named("nope")
        XCTAssertThrowsError(try s.plan())
    }

    func testListedRunsAndMemoryLimits() throws {
        var s = SweepSpecification()
        s.common = ["steps": "2"]
        s.memoryLimit = 4 << 30
        s.runs = [SweepConfiguration(name: "small", options: ["batch": "2"]),
                  SweepConfiguration(name: "", options: ["batch": "64", "memory-limit": "512MiB"])]
        s.repeats = 3
        let plan = try s.plan()
        XCTAssertEqual(plan.configurations.map(\.name), ["small", "run2"])
        XCTAssertEqual(plan.configurations[0].memoryLimit, 4 << 30)
        XCTAssertEqual(plan.configurations[1].memoryLimit, 512 << 20)
        XCTAssertNil(plan.configurations[1].options["memory-limit"], "memory-limit is the sweep's, not train's")
        XCTAssertEqual(plan.configurations[1].options, ["steps": "2", "batch": "64"])
        XCTAssertEqual(plan.repeats, 3)
    }

    func testBadSweepsAreErrors() {
        var empty = SweepSpecification()
        XCTAssertThrowsError(try empty.plan())
        empty.factors = [SweepFactor(name: "precision", levels: [])]
        XCTAssertThrowsError(try empty.plan())
        var reserved = SweepSpecification()
        reserved.runs = [SweepConfiguration(name: "a", options: ["result": "x.json"])]
        XCTAssertThrowsError(try reserved.plan())
        var twice = SweepSpecification()
        twice.runs = [SweepConfiguration(name: "a", options: [:]), SweepConfiguration(name: "a", options: ["batch": "2"])]
        XCTAssertThrowsError(try twice.plan())
        var badName = SweepSpecification()
        badName.runs = [SweepConfiguration(name: "../escape", options: [:])]
        XCTAssertThrowsError(try badName.plan())
        var badLimit = SweepSpecification()
        badLimit.runs = [SweepConfiguration(name: "a", options: ["memory-limit": "lots"])]
        XCTAssertThrowsError(try badLimit.plan())
    }

    func testFlagFactorsNameTheirCells() throws {
        var s = SweepSpecification()
        s.factors = [SweepFactor(name: "checkpointing", levels: [SweepLevel("false"), SweepLevel("true")]),
                     SweepFactor(name: "lora-targets", levels: [SweepLevel("q,v"), SweepLevel("all-linear")])]
        XCTAssertEqual(try s.plan().configurations.map(\.name),
                       ["no-checkpointing_q-v", "no-checkpointing_all-linear", "checkpointing_q-v", "checkpointing_all-linear"])
    }

    func testByteCounts() {
        XCTAssertEqual(ByteCount.parse("4000000"), 4_000_000)
        XCTAssertEqual(ByteCount.parse("3GiB"), 3 << 30)
        XCTAssertEqual(ByteCount.parse("3G"), 3 << 30)
        XCTAssertEqual(ByteCount.parse("1.5 GB"), 1_500_000_000)
        XCTAssertEqual(ByteCount.parse("512mib"), 512 << 20)
        XCTAssertEqual(ByteCount.parse("64K"), 65536)
        XCTAssertNil(ByteCount.parse("lots"))
        XCTAssertNil(ByteCount.parse("-1G"))
        XCTAssertNil(ByteCount.parse("3 parsecs"))
        XCTAssertNil(ByteCount.parse("1e30"))
    }
}
