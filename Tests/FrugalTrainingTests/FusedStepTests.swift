// FusedStepTests: the optimizer step fused into backward gives the unfused step's weights bit for
// bit (with the optimizer offloaded too, each block updated on the host while the next one's
// backward runs), holds one block's gradients, refuses what needs every gradient first, and stops
// on a non-finite gradient.
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
                                         family: String = "llama3", offloaded: Bool = false,
                                         file: StaticString = #filePath, line: UInt = #line) throws {
        var c = TinyTraining.configuration(method, steps: 3, microBatch: 4)
        c.optimizer = optimizer
        c.precision = precision
        c.weightDecay = 0.01
        let plain = try TinyTraining.trainer(c, sequences, family: family)
        c.fusedOptimizerStep = true
        c.offloadOptimizer = offloaded
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

    /// The fused step with the optimizer offloaded (the update on the host, a block behind
    /// backward) against the unfused step on the device.
    func testOffloadedFusedEqualsUnfused() throws {
        try checkFusedEqualsUnfused(.full, optimizer: .adamW, offloaded: true)
        try checkFusedEqualsUnfused(.full, optimizer: .adamW8bit, precision: .bf16, family: "opt", offloaded: true)
        try checkFusedEqualsUnfused(.lora(LoRAConfiguration(rank: 4, alpha: 8, targets: ["all-linear"])), optimizer: .sgd,
                                    precision: .pureBF16, offloaded: true)
    }

    /// Offloaded, a block's update waits for the next block's gradients to be sent: when backward
    /// finishes block i, block i + 1 is updated and block i is not yet — so on a GPU the host
    /// updates block i + 1 while the device computes block i − 1's backward. Then `finish` updates
    /// the first block and what lies outside the blocks.
    func testOffloadedFusedStepUpdatesOneBlockBehind() throws {
        var c = TinyTraining.configuration(.full, steps: 1, microBatch: 2)
        c.fusedOptimizerStep = true
        c.offloadOptimizer = true
        let trainer = try TinyTraining.trainer(c, sequences)
        let parameters = trainer.parameters.parameters, backend = trainer.backend
        var random = SplitMix64(seed: 9)
        func fillGradients(block: Int?) {
            for p in parameters where p.block == block {
                let values = (0..<p.gradient.count).map { _ in random.nextUniform() - 0.5 }
                values.withUnsafeBytes { backend.copy(p.gradient, at: 0, from: backend.upload($0, p.gradient.shape, .f32, .workspace)) }
            }
        }
        let blocks = Set(parameters.compactMap(\.block)).sorted(by: >)
        XCTAssertGreaterThan(blocks.count, 1)
        let before = TinyTraining.values(trainer)
        func changed() -> Set<String> {
            Set(zip(TinyTraining.values(trainer), before).enumerated().filter { $0.element.0 != $0.element.1 }.map { parameters[$0.offset].name })
        }
        func names(_ blocks: some Sequence<Int>) -> Set<String> {
            Set(parameters.filter { $0.block.map(blocks.contains) ?? false }.map(\.name))
        }
        let step = FusedStep(trainer, rate: 1e-2)
        for (n, block) in blocks.enumerated() {
            fillGradients(block: block)
            step.blockDone(block)
            XCTAssertEqual(changed(), names(blocks.prefix(n)), "after block \(block)'s backward")
        }
        fillGradients(block: nil)
        let norm = try step.finish(loss: 1, step: 1)
        XCTAssertGreaterThan(norm, 0)
        XCTAssertEqual(changed(), Set(parameters.map(\.name)))
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
    /// and the step stops naming the tensor — on the device and with the update offloaded.
    func testNonFiniteGradientStopsTheStep() throws {
        try checkNonFiniteGradientStopsTheStep(offloaded: false)
        try checkNonFiniteGradientStopsTheStep(offloaded: true)
    }

    private func checkNonFiniteGradientStopsTheStep(offloaded: Bool) throws {
        var c = TinyTraining.configuration(.full, steps: 1, microBatch: 2)
        c.fusedOptimizerStep = true
        c.offloadOptimizer = offloaded
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
