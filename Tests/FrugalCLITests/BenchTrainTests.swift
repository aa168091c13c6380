// End-to-end: `frugal bench train` on a random model of a named shape, as bench/run-gpu runs it.
import Foundation
import XCTest

final class BenchTrainTests: XCTestCase {
    /// A full fine-tune under fp16 creates its random weights in f32 for the masters, then trains
    /// on 16-bit compute copies (it once trapped: the weights were drawn in f16). An overflowed
    /// first step may be skipped; the row still counts the timed steps.
    func testFullFineTuneUnderFP16() throws {
        let (status, _, stdout) = try BadInputTests.frugal(["bench", "train", "--device", "cpu", "--shape", "smollm2",
                                                             "--method", "full", "--precision", "fp16", "--batch", "1",
                                                             "--seq", "8", "--steps", "2", "--warmup", "1", "--json"])
        XCTAssertEqual(status, 0, stdout)
        let last = try XCTUnwrap(stdout.split(separator: "\n").last)
        let row = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any])
        XCTAssertEqual(row["method"] as? String, "full")
        XCTAssertEqual(row["precision"] as? String, "fp16")
        XCTAssertGreaterThan(try XCTUnwrap(row["tokens_per_s"] as? Double), 0)
        let peaks = try XCTUnwrap(row["peak_by_category_gib"] as? [String: Double])
        // 134.5M trainable values, drawn in f32 (4 bytes each, the trainable peak while the first
        // compute copy is made), then f32 masters and moments in the optimizer (12 bytes each).
        let values = 134_515_008.0, gib = Double(1 << 30)
        XCTAssertEqual(try XCTUnwrap(peaks["trainable"]), 4 * values / gib, accuracy: 0.1)
        XCTAssertEqual(try XCTUnwrap(peaks["optimizer"]), 12 * values / gib, accuracy: 0.1)
    }
}
