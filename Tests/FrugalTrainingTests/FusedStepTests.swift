// FusedStepTests: the optimizer step fused into backward gives the unfused step's weights bit for
// bit, holds one block's gradients, refuses what needs every gradient first, and stops on a
// non-finite gradient.
import Foundation
import FrugalCore
import FrugalCPU
@testable import FrugalModels
@testable import FrugalTraining
import XCTest

final class FusedStepTests: XCTestCase {
    private let sequences = TinyTraining.sequences(8, lengths: 8...14, seed: 4)

    /// Three steps fused and unfused from the same start: the same losses, norms and weights,
    /// exactly; the fused run's gradients take less memory.
    private func checkFusedEqualsUnfused(_ method: TrainingMethod, optimizer: OptimizerKind, precision: PrecisionPolicy = .fp32,
                                         family: String = "llama3", file: StaticString = #filePath, line: UInt = #line) throws {
        var c = TinyTraining.configuration(method, steps: 3, microBatch: 4)
        c.optimizer = optimizer
        c.precision = precision
        c.weightDecay = 0.01
        let plain = try TinyTraining.trainer(c, sequences, family: family)
        c.fusedOptimizerStep = true
        let fused = try TinyTraining.trainer(c, sequences, family: family)
        XCTAssertTrue(fused.parameters.sharesBlockGradients, file: file, line: line)
        for step in 1...3 {
            let a = try TinyTraining.step(plain, file: file, line: line), b = try TinyTraining.step(fused, file: file, line: line)
            XCTAssertEqual(a.loss, b.loss, "step \(step): loss", file: file, line: line)
            XCTAssertEqual(a.gradientNorm, b.gradientNorm, accuracy: 1e-9 * a.gradientNorm, "step \(step): norm", file: file, line: line)
        }
        TinyTraining.assertClose(TinyTraining.values(fused), TinyTraining.values(plain), tolerance: 0, plain, "weights after 3 steps",
                                 file: file, line: line)
        let plainGradients = plain.backend.ledger.snapshot.peak[.gradients]!
        let fusedGradients = fused.backend.ledger.snapshot.peak[.gradients]!
        XCTAssertLessThan(fusedGradients, plainGradients, file: file, line: line)
    }

    func testFullFineTuneFusedEqualsUnfused() throws {
        try checkFusedEqualsUnfused(.full, optimizer: .adamW)
        try checkFusedEqualsUnfused(.full, optimizer: .adamW8bit, precision: .bf16, family: "opt")
    }

    func testLoRAFusedEqualsUnfused() throws {
        try checkFusedEqualsUnfused(.lora(LoRAConfiguration(rank: 4, alpha: 8, dropout: 0.1, targets: ["all-linear"])), optimizer: .adamW)
    }

    /// Accumulation, clipping and fp16 need every gradient before any update; shared gradients
    /// need the fused step.
    func testRefusesWhatNeedsEveryGradientFirst() throws {
        var c = TinyTraining.configuration(.full, steps: 1, microBatch: 2)
        c.fusedOptimizerStep = true
        for change in [{ (c: inout TrainingConfiguration) in c.gradientAccumulation = 2 }, { $0.maxGradientNorm = 1 },
                       { $0.precision = .fp16 }] {
            var bad = c
            change(&bad)
            XCTAssertThrowsError(try TinyTraining.trainer(bad, sequences)) { error in
                XCTAssertTrue("\(error)".contains("fused optimizer step"), "\(error)")
            }
        }
        let files = try ModelFiles(path: TinyTraining.models.appendingPathComponent("llama3").path)
        let decoder = try files.decoder(on: CPUBackend(), trainable: true)
        let shared = try decoder.allWeights(shareBlockGradients: true)
        c.fusedOptimizerStep = false
        let loader = try DataLoader(sequences: sequences, batchSize: 2, strategy: .padding(length: nil), shuffle: false)
        XCTAssertThrowsError(try Trainer(decoder: decoder, parameters: shared, configuration: c, loader: loader))
    }

    /// A NaN weight in the last block: its gradients are the first checked, nothing is updated,
    /// and the step stops naming the tensor.
    func testNonFiniteGradientStopsTheStep() throws {
        var c = TinyTraining.configuration(.full, steps: 1, microBatch: 2)
        c.fusedOptimizerStep = true
        let trainer = try TinyTraining.trainer(c, sequences)
        let last = trainer.parameters.parameters.last { $0.block != nil && $0.name.hasSuffix("down.weight") }!
        var values = trainer.backend.download(last.value)
        values[0] = .nan
        values.withUnsafeBytes { trainer.backend.copy(last.value, at: 0, from: trainer.backend.upload($0, last.value.shape, .f32, .workspace)) }
        let before = TinyTraining.values(trainer)
        XCTAssertThrowsError(try trainer.trainStep()) { error in
            guard case let FrugalError.numericalFault(step, detail) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(step, 1)
            XCTAssertTrue(detail.contains("non-finite gradient"), detail)
        }
        let after = TinyTraining.values(trainer)
        for (i, (a, b)) in zip(after, before).enumerated() where trainer.parameters.parameters[i].name != last.name {
            XCTAssertEqual(a, b, "\(trainer.parameters.parameters[i].name) changed")
        }
    }
}
