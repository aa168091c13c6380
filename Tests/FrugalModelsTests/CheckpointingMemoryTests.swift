// Activation checkpointing keeps only block inputs: measured activation memory falls as expected.
import XCTest
import FrugalCore
import FrugalCPU
import FrugalFormats
@testable import FrugalModels

final class CheckpointingMemoryTests: XCTestCase {
    /// Bytes one block's forward saves per token for LoRA on q,k,v,o (see `BlockTape`): input,
    /// h1, q, k, v, attention output, s1, gate, up, and the LoRA hidden states — not the inputs of
    /// the frozen gate, up and down projections (h2, the product), which their backward never reads.
    private func tapeBytesPerToken(_ c: ModelConfiguration, rank: Int) -> Int {
        let d = c.hiddenSize, q = c.heads * c.headDim, kv = c.kvHeads * c.headDim
        return 4 * (d + d + q + 2 * kv + q + d + 2 * c.intermediateSize + 4 * rank)
    }

    func testCheckpointingKeepsOnlyBlockInputs() throws {
        try XCTSkipUnless(FileManager.default.fileExists(atPath: RealModelTests.modelPath), "run scripts/setup to fetch SmolLM2")
        let files = try ModelFiles(path: RealModelTests.modelPath)
        let c = files.configuration, tokens = 32, rank = 8
        func peak(checkpointing: Bool) throws -> Int {
            let backend = CPUBackend()
            let decoder = try files.decoder(on: backend)
            let parameters = try decoder.attachLoRA(LoRAConfiguration(rank: rank, alpha: 16, targets: ["q", "k", "v", "o"]), seed: 1)
            let ids = (0..<tokens).map { Int32(($0 * 7919) % c.vocabSize) }
            let batch = TrainingBatch(tokens: ids, targets: ids.map { ($0 + 1) % Int32(c.vocabSize) }, batch: 1)
            var random = SplitMix64(seed: 3)
            _ = decoder.accumulateGradients(batch, into: parameters, options: PassOptions(checkpointing: checkpointing),
                                            random: &random)
            return backend.ledger.snapshot.peak[.activations]!
        }
        let tape = tokens * tapeBytesPerToken(c, rank: rank), input = tokens * c.hiddenSize * 4
        let full = try peak(checkpointing: false), kept = try peak(checkpointing: true)
        // Without checkpointing all 30 tapes live at once; with it, 30 inputs and about one tape.
        XCTAssertGreaterThanOrEqual(Double(full), 0.95 * Double(c.layers * tape), "full \(full)")
        XCTAssertLessThanOrEqual(Double(kept), Double(c.layers * input + 3 * tape), "checkpointed \(kept)")
        XCTAssertGreaterThan(Double(full) / Double(kept), 5, "full \(full) vs checkpointed \(kept)")
    }
}
