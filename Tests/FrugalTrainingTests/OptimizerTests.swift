// OptimizerTests: 8-bit AdamW in the trainer — it tracks f32 AdamW on a full fine-tune of the
// tiny llama, and its state in the memory ledger is a quarter of AdamW's.

import Foundation
import FrugalCore
import FrugalCPU
@testable import FrugalModels
@testable import FrugalTraining
import XCTest

final class OptimizerTests: XCTestCase {
    /// A full fine-tune of the tiny llama (106 816 values), 60 steps over 16 shuffled sequences
    /// from the same start, lr 1e-3 with warm-up and cosine decay, weight decay 0.01: with 8-bit
    /// moments the mean loss of the last 8 steps is within 1% of f32 AdamW's; the values end
    /// apart by less than 15% (root mean square) of how far f32 AdamW moved them, and no value
    /// further than 30% of the largest distance one moved. (Were a nonzero v rounded to 0, as
    /// bitsandbytes does, embedding rows a batch skips would jump by lr·m̂/ε: 4.4 here.)
    func testAdamW8bitTracksAdamW() throws {
        let sequences = TinyTraining.sequences(16, lengths: 8...16, seed: 21)
        var c = TinyTraining.configuration(.full, steps: 60, microBatch: 4)
        c.learningRate = 1e-3
        c.warmupSteps = 5
        c.schedule = .cosine
        c.weightDecay = 0.01
        let reference = try TinyTraining.trainer(c, sequences, shuffle: true)
        c.optimizer = .adamW8bit
        let quantized = try TinyTraining.trainer(c, sequences, shuffle: true)
        let start = TinyTraining.values(reference)
        var losses = [(Double, Double)]()
        while !reference.isFinished {
            losses.append((try TinyTraining.step(reference).loss, try TinyTraining.step(quantized).loss))
        }
        let last = losses.suffix(8), f32 = last.map(\.0).reduce(0, +) / 8, q8 = last.map(\.1).reduce(0, +) / 8
        let final = TinyTraining.values(reference), final8 = TinyTraining.values(quantized)
        func rms(_ a: [[Float]], _ b: [[Float]]) -> Double {
            zip(a.joined(), b.joined()).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }.squareRoot()
        }
        let moved = TinyTraining.largestDifference(final, start).0, apart = TinyTraining.largestDifference(final8, final).0
        let relativeRMS = rms(final8, final) / rms(final, start)
        print(String(format: "60 steps: loss %.4f → %.4f (AdamW), %.4f (8-bit AdamW); values apart by %.1f%% (RMS) of AdamW's move; largest difference %.4f, largest move %.4f",
                     losses[0].0, f32, q8, 100 * relativeRMS, apart, moved))
        XCTAssertLessThan(f32, 0.8 * losses[0].0, "the run should learn")
        XCTAssertEqual(q8, f32, accuracy: 0.01 * f32)
        XCTAssertLessThan(relativeRMS, 0.15)
        XCTAssertLessThan(apart, 0.3 * moved)
    }

    /// One step of a full fine-tune: the ledger's optimizer memory is exactly the blocks the 8-bit
    /// moments take (`OptimizerKind.stateBytes`), within 1% of 2 × 260/256 bytes per value (the
    /// five 64-value norms pad to a block each), against 8 bytes per value for AdamW.
    func testAdamW8bitStateIsAQuarterOfAdamWs() throws {
        var measured = [OptimizerKind: Int](), count = 0
        for kind in [OptimizerKind.adamW, .adamW8bit] {
            var c = TinyTraining.configuration(.full, steps: 1, microBatch: 2)
            c.optimizer = kind
            let trainer = try TinyTraining.trainer(c, TinyTraining.sequences(2, lengths: 8...8))
            _ = try TinyTraining.step(trainer)
            measured[kind] = trainer.backend.ledger.snapshot.peak[.optimizer]
            count = trainer.parameters.parameters.reduce(0) { $0 + $1.value.count }
            let exact = trainer.parameters.parameters.reduce(0) { $0 + kind.stateBytes(values: $1.value.count) }
            XCTAssertEqual(measured[kind], exact, "\(kind)")
        }
        let perValue = Double(measured[.adamW8bit]!) / Double(count)
        print(String(format: "optimizer state for %d values: AdamW %d bytes (%.2f per value), 8-bit AdamW %d (%.4f per value)",
                     count, measured[.adamW]!, Double(measured[.adamW]!) / Double(count), measured[.adamW8bit]!, perValue))
        XCTAssertEqual(measured[.adamW], 8 * count)
        let ideal = 2.0 * 260 / 256
        XCTAssertEqual(perValue, ideal, accuracy: 0.01 * ideal)
    }
}
