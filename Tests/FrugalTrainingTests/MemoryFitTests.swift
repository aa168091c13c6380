// MemoryFitTests: the micro-batch `--auto-batch` picks and what an out-of-memory report suggests.
import FrugalCore
import FrugalFormats
import FrugalModels
@testable import FrugalTraining
import XCTest

final class MemoryFitTests: XCTestCase {
    /// Llama-3.1-8B's shape, LoRA on every projection, bf16, 4 × 1024 on the GPU (the W1 workload).
    private var w1: MemoryPlan.Configuration {
        MemoryPlan.Configuration(model: ModelConfiguration.named("llama3.1-8b")!, baseDType: .bf16,
                                 method: .lora(LoRAConfiguration(rank: 16, alpha: 32, targets: ["all-linear"])),
                                 precision: .bf16, microBatch: 4, sequenceLength: 1024, device: .cuda)
    }

    func testMicroBatchesDivideTheBatch() {
        XCTAssertEqual(MemoryPlan.microBatches(dividing: 12), [12, 6, 4, 3, 2, 1])
        XCTAssertEqual(MemoryPlan.microBatches(dividing: 7), [7, 1])
        XCTAssertEqual(MemoryPlan.microBatches(dividing: 1), [1])
    }

    /// The largest micro-batch whose prediction fits, and none when one sequence is too many.
    func testLargestMicroBatchIsTheFirstThatFits() throws {
        let peaks = try [4, 2, 1].map { size -> Int in
            var c = w1
            c.microBatch = size
            return try MemoryPlan.predict(c).peakTotal
        }
        XCTAssertEqual(try MemoryPlan.largestMicroBatch(w1, fitting: peaks[0])?.configuration.microBatch, 4)
        XCTAssertEqual(try MemoryPlan.largestMicroBatch(w1, fitting: peaks[0] - 1)?.configuration.microBatch, 2)
        XCTAssertEqual(try MemoryPlan.largestMicroBatch(w1, fitting: peaks[2])?.configuration.microBatch, 1)
        XCTAssertNil(try MemoryPlan.largestMicroBatch(w1, fitting: peaks[2] - 1))
        // Weights measured 1 GiB lighter than predicted leave that much more room.
        let predictedWeights = try MemoryPlan.predict(w1).peak[.weights]!
        XCTAssertEqual(try MemoryPlan.largestMicroBatch(w1, fitting: peaks[0] - (1 << 30),
                                                        weights: predictedWeights - (1 << 30))?.configuration.microBatch, 4)
    }

    /// The suggestion keeps the whole batch and prefers no recomputation, then the largest
    /// micro-batch; past what any micro-batch fits, it turns checkpointing on; and it reads as options.
    func testSuggestionPrefersNoCheckpointingThenTheLargestMicroBatch() throws {
        var one = w1
        one.microBatch = 1
        let atOne = try MemoryPlan.predict(one).peakTotal
        let fits = try XCTUnwrap(MemoryPlan.suggestion(for: w1, fitting: atOne))
        XCTAssertEqual(fits.configuration.microBatch, 1)
        XCTAssertFalse(fits.configuration.checkpointing)
        XCTAssertEqual(fits.options(from: w1, accumulation: 2), "--batch 1 --grad-accum 8")

        let checkpointed = try XCTUnwrap(MemoryPlan.suggestion(for: w1, fitting: atOne - 1))
        XCTAssertTrue(checkpointed.configuration.checkpointing)
        XCTAssertTrue(checkpointed.options(from: w1, accumulation: 1).hasSuffix("--checkpointing"))
        XCTAssertNil(try MemoryPlan.suggestion(for: w1, fitting: 1 << 30))  // the weights alone are 15 GiB
    }
}
