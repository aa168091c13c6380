// OffloadTests: the optimizer offloaded to host memory gives the on-device optimizer's weights and
// state bit for bit with none of it on the device; activation offload gives the same gradients with
// the checkpointed block inputs counted on the host instead of the device.
import Foundation
import FrugalCore
import FrugalCPU
@testable import FrugalModels
@testable import FrugalTraining
import XCTest

final class OffloadTests: XCTestCase {
    private let sequences = TinyTraining.sequences(8, lengths: 8...14, seed: 5)

    // MARK: - Optimizer offload

    /// Three steps with the optimizer on the device and offloaded, from the same start: the same
    /// losses, weights and state, exactly; offloaded, the device holds no optimizer memory and the
    /// host holds the device run's state plus an f32 copy of each weight where no master is kept.
    private func checkOffloadedOptimizer(_ optimizer: OptimizerKind, _ precision: PrecisionPolicy, fused: Bool,
                                         file: StaticString = #filePath, line: UInt = #line) throws {
        let what = "\(optimizer.rawValue), \(precision.rawValue)\(fused ? ", fused" : "")"
        var c = TinyTraining.configuration(.full, steps: 3, microBatch: 4)
        c.optimizer = optimizer
        c.precision = precision
        c.weightDecay = 0.01
        c.fusedOptimizerStep = fused
        let device = try TinyTraining.trainer(c, sequences)
        c.offloadOptimizer = true
        let offloaded = try TinyTraining.trainer(c, sequences)
        for step in 1...3 {
            let a = try TinyTraining.step(device, file: file, line: line), b = try TinyTraining.step(offloaded, file: file, line: line)
            XCTAssertEqual(a.loss, b.loss, "\(what), step \(step): loss", file: file, line: line)
        }
        TinyTraining.assertClose(TinyTraining.values(offloaded), TinyTraining.values(device), tolerance: 0, device,
                                 "\(what): weights after 3 steps", file: file, line: line)
        let deviceState = TinyTraining.optimizerState(device), offloadedState = TinyTraining.optimizerState(offloaded)
        for (name, values) in deviceState {
            XCTAssertTrue(offloadedState[name] == values, "\(what): state '\(name)' differs", file: file, line: line)
        }
        let onDevice = device.backend.ledger.snapshot.peak[.optimizer, default: 0]
        XCTAssertEqual(offloaded.backend.ledger.snapshot.peak[.optimizer, default: 0], 0, "\(what): device optimizer memory",
                       file: file, line: line)
        let weights = precision.keepsMasters ? 0 : 4 * offloaded.parameters.count
        XCTAssertEqual(offloaded.backend.hostLedger.snapshot.peak[.optimizer, default: 0], onDevice + weights,
                       "\(what): host optimizer memory", file: file, line: line)
    }

    func testOffloadedOptimizerEqualsOnDevice() throws {
        for optimizer in OptimizerKind.allCases {
            for precision in [PrecisionPolicy.fp32, .bf16] {
                for fused in [false, true] { try checkOffloadedOptimizer(optimizer, precision, fused: fused) }
            }
        }
    }

    /// Pure bf16 keeps no master: the host's copy of each weight is rounded after every update, as
    /// the device's weight is.
    func testOffloadedOptimizerPureBF16() throws {
        try checkOffloadedOptimizer(.adamW, .pureBF16, fused: false)
    }

    /// A checkpoint of an offloaded run resumes exactly: the host state is saved and restored.
    func testOffloadedOptimizerResumes() throws {
        var c = TinyTraining.configuration(.full, steps: 4, microBatch: 4)
        c.offloadOptimizer = true
        let straight = try TinyTraining.trainer(c, sequences)
        let interrupted = try TinyTraining.trainer(c, sequences)
        for _ in 1...2 {
            _ = try TinyTraining.step(straight)
            _ = try TinyTraining.step(interrupted)
        }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("offload-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let saved = try Checkpoint.save(interrupted, in: folder)
        let resumed = try TinyTraining.trainer(c, sequences)
        try Checkpoint.restore(resumed, from: saved)
        for _ in 3...4 { XCTAssertEqual(try TinyTraining.step(resumed).loss, try TinyTraining.step(straight).loss) }
        TinyTraining.assertClose(TinyTraining.values(resumed), TinyTraining.values(straight), tolerance: 0, straight, "resumed weights")
    }

    // MARK: - Activation offload

    /// Two checkpointed steps with and without activation offload: the same losses and gradients,
    /// exactly; every block input counted on the host at once, and the device's activations peak
    /// lower by all but two block inputs: the one brought back in backward and the next one, on its
    /// way back meanwhile (`Backend.prefetch`; the fixtures' two layers then save nothing).
    private func checkOffloadedActivations(_ method: TrainingMethod, family: String,
                                           file: StaticString = #filePath, line: UInt = #line) throws {
        let length = 16, microBatch = 4
        var c = TinyTraining.configuration(method, steps: 2, microBatch: microBatch)
        c.checkpointing = true
        let kept = try TinyTraining.trainer(c, sequences, family: family, strategy: .padding(length: length))
        c.offloadActivations = true
        let offloaded = try TinyTraining.trainer(c, sequences, family: family, strategy: .padding(length: length))
        for step in 1...2 {
            let a = try TinyTraining.step(kept, file: file, line: line), b = try TinyTraining.step(offloaded, file: file, line: line)
            XCTAssertEqual(a.loss, b.loss, "\(family) step \(step): loss", file: file, line: line)
            TinyTraining.assertClose(TinyTraining.gradients(offloaded), TinyTraining.gradients(kept), tolerance: 0, kept,
                                     "\(family) step \(step): gradients", file: file, line: line)
        }
        let model = kept.decoder.configuration
        let blockInput = 4 * microBatch * length * model.hiddenSize
        XCTAssertEqual(offloaded.backend.hostLedger.snapshot.peak[.activations], model.layers * blockInput,
                       "\(family): host activations", file: file, line: line)
        XCTAssertEqual(kept.backend.hostLedger.snapshot.peakTotal, 0, file: file, line: line)
        let drop = kept.backend.ledger.snapshot.peak[.activations]! - offloaded.backend.ledger.snapshot.peak[.activations]!
        XCTAssertEqual(drop, (model.layers - 2) * blockInput, "\(family): device activations saved", file: file, line: line)
    }

    func testOffloadedActivationsGiveTheSameGradients() throws {
        try checkOffloadedActivations(.full, family: "llama3")
        try checkOffloadedActivations(.lora(LoRAConfiguration(rank: 4, alpha: 8, dropout: 0.1, targets: ["all-linear"])),
                                      family: "gpt2")
    }

    /// Activation offload moves what checkpointing keeps: without checkpointing it is refused.
    func testActivationOffloadNeedsCheckpointing() throws {
        var c = TinyTraining.configuration(.full, steps: 1, microBatch: 2)
        c.offloadActivations = true
        XCTAssertThrowsError(try TinyTraining.trainer(c, sequences)) { error in
            XCTAssertTrue("\(error)".contains("needs checkpointing"), "\(error)")
        }
    }

    /// What `frugal gpu-check` runs on the GPU, here on the CPU: every case passes, bit for bit.
    func testOffloadAgreementOnTheCPU() throws {
        let results = try OffloadAgreement.run(makeBackend: { CPUBackend() })
        XCTAssertEqual(results.count, 4)
        for result in results {
            XCTAssertTrue(result.passed, result.description)
            XCTAssertEqual(result.maxError, 0, result.description)
        }
    }

    /// The backend seam itself: a host copy holds the bytes in the host ledger, and comes back equal
    /// in the original category.
    func testOffloadAndRestoreRoundTrip() {
        let backend = CPUBackend()
        let values: [Float] = (0..<1000).map { Float($0) * 0.37 - 11 }
        var copy: HostCopy? = backend.offload(TinyTraining.tensor(values, on: backend, .activations))
        XCTAssertEqual(backend.ledger.snapshot.current[.activations, default: 0], 0)
        XCTAssertEqual(backend.hostLedger.snapshot.current[.activations], 4000)
        let restored = backend.restore(copy!)
        copy = nil
        XCTAssertEqual(backend.download(restored), values)
        XCTAssertEqual(restored.storage.category, .activations)
        XCTAssertEqual(backend.hostLedger.snapshot.current[.activations], 0)
    }

    /// A prefetched copy is on the device (in the ledger) from `prefetch`, and `restore` hands over
    /// that tensor; another copy restored meanwhile comes back on its own.
    func testPrefetchThenRestore() {
        let backend = CPUBackend()
        let first: [Float] = (0..<1000).map { Float($0) * 0.37 - 11 }, second = first.map { -2 * $0 }
        let copies = [first, second].map { backend.offload(TinyTraining.tensor($0, on: backend, .activations), dropping: true) }
        backend.prefetch(copies[0])
        XCTAssertEqual(backend.ledger.snapshot.current[.activations], 4000)
        XCTAssertEqual(backend.download(backend.restore(copies[1])), second)
        let restored = backend.restore(copies[0])
        XCTAssertEqual(backend.ledger.snapshot.current[.activations], 4000, "restore made no second tensor")
        XCTAssertEqual(backend.download(restored), first)
        XCTAssertEqual(backend.download(backend.restore(copies[0])), first, "a copy restores again after its prefetch")
    }
}
