// QuantizedBaseTests: LoRA over a base quantized on load (QLoRA-style): the loader quantizes
// exactly the block projections (plain, fused and transposed layouts), training on an nf4 base
// is training on its decoded values, tracks an f32 base within quantization noise, and holds the
// projections in 134/1024 of their f32 memory.

import Foundation
import FrugalCore
import FrugalCPU
import FrugalFormats
@testable import FrugalModels
import FrugalTraining
import XCTest

final class QuantizedBaseTests: XCTestCase {
    /// A Llama-shaped model whose every projection has rows of whole nf4 blocks: hidden 256,
    /// MLP 512, 4 heads of 64 (2 for k and v), 2 layers, vocabulary 512.
    static let shape = ModelConfiguration(architecture: .llama, modelType: "llama", vocabSize: 512, hiddenSize: 256,
                                          intermediateSize: 512, layers: 2, heads: 4, kvHeads: 2, headDim: 64,
                                          maxPositions: 64, normEps: 1e-5, tiedEmbeddings: true)

    /// `steps` LoRA steps (all-linear, rank 8) on 4 fixed sequences of 32 tokens, one batch of 4
    /// per step; returns the losses.
    private func train(_ decoder: Decoder, steps: Int = 20) throws -> [Double] {
        let lora = LoRAConfiguration(rank: 8, alpha: 16, dropout: 0, targets: ["all-linear"])
        var training = TrainingConfiguration()
        training.method = .lora(lora)
        training.steps = steps
        training.microBatch = 4
        training.learningRate = 1e-2
        training.schedule = .constant
        training.maxGradientNorm = 0
        var random = SplitMix64(seed: 3)
        let sequences = (0..<4).map { _ in
            let ids = (0...32).map { _ in Int32(random.next() % UInt64(Self.shape.vocabSize)) }
            return TokenizedExample(tokens: Array(ids.dropLast()), targets: Array(ids.dropFirst()))
        }
        let loader = try DataLoader(sequences: sequences, batchSize: 4, strategy: .padding(length: 32), shuffle: false)
        let trainer = try Trainer(decoder: decoder, parameters: try decoder.attachLoRA(lora, seed: 2), configuration: training,
                                  loader: loader)
        var losses = [Double]()
        while !trainer.isFinished { losses.append(try TinyTraining.step(trainer).loss) }
        return losses
    }

    /// `decoder` with every block projection replaced by its decoded values in f32.
    private func decoded(_ decoder: Decoder) -> Decoder {
        var weights = decoder.weights
        for b in weights.blocks.indices {
            for role in ProjectionRole.allCases {
                guard var linear = weights.blocks[b][role] else { continue }
                let values = decoder.backend.download(linear.weight)
                linear.weight = values.withUnsafeBytes { decoder.backend.upload($0, linear.weight.shape, .f32, .weights) }
                weights.blocks[b][role] = linear
            }
        }
        return Decoder(configuration: decoder.configuration, weights: weights, backend: decoder.backend)
    }

    func testNF4BaseTrainsAsItsDecodedValuesAndTracksTheF32Base() throws {
        let f32 = Decoder.random(Self.shape, on: CPUBackend(), seed: 1)
        let nf4 = Decoder.random(Self.shape, on: CPUBackend(), quantize: .nf4, seed: 1)
        let counts = BaseQuantization(nf4.weights, dtype: .nf4)
        XCTAssertEqual([counts.quantized, counts.leftAsStored], [14, 0])
        let widened = decoded(nf4)

        let f32Losses = try train(f32), nf4Losses = try train(nf4), widenedLosses = try train(widened)
        print("losses, f32 base:  \(f32Losses.map { String(format: "%.4f", $0) })")
        print("losses, nf4 base:  \(nf4Losses.map { String(format: "%.4f", $0) })")
        print("losses, decoded:   \(widenedLosses.map { String(format: "%.4f", $0) })")
        XCTAssertLessThan(nf4Losses.last!, nf4Losses.first! - 2, "LoRA learns on the nf4 base")
        // The same products up to summation order: equal at the first step, then drifting by
        // float noise that Adam's normalized steps amplify.
        XCTAssertEqual(nf4Losses[0], widenedLosses[0], accuracy: 1e-6 * widenedLosses[0], "first step: nf4 vs decoded values")
        for (step, (a, b)) in zip(nf4Losses, widenedLosses).enumerated() {
            XCTAssertEqual(a, b, accuracy: 2e-3 * b, "step \(step): nf4 base vs its decoded values in f32")
        }
        // Quantization noise: weights off by 9% RMS move the curve by a few percent at most.
        for (step, (a, b)) in zip(nf4Losses, f32Losses).enumerated() {
            XCTAssertEqual(a, b, accuracy: 0.04 * b, "step \(step): nf4 base vs f32 base")
        }
        XCTAssertEqual(nf4Losses.last!, f32Losses.last!, accuracy: 0.02 * f32Losses.last!)
    }

    /// The projections' memory drops to 134/1024 of f32 (4.19 bits per value); embeddings and norms stay.
    func testNF4BaseHoldsProjectionsInAboutAnEighthOfTheirF32Memory() {
        let c = Self.shape, q = c.heads * c.headDim, kv = c.kvHeads * c.headDim
        let projectionValues = c.layers * (c.hiddenSize * (2 * q + 2 * kv) + 3 * c.hiddenSize * c.intermediateSize)
        var weights = [DType: Int]()
        for dtype in [DType.f32, .nf4, .q8_0] {
            let backend = CPUBackend()
            let decoder = Decoder.random(c, on: backend, quantize: dtype == .f32 ? nil : dtype, seed: 1)
            weights[dtype] = backend.ledger.snapshot.current[.weights, default: 0]
            withExtendedLifetime(decoder) {}
        }
        let other = weights[.f32]! - 4 * projectionValues
        let nf4Ratio = Double(weights[.nf4]! - other) / Double(4 * projectionValues)
        let q8Ratio = Double(weights[.q8_0]! - other) / Double(4 * projectionValues)
        print("projection memory vs f32: nf4 \(nf4Ratio), q8_0 \(q8Ratio); weights \(weights)")
        XCTAssertEqual(nf4Ratio, 134.0 / 1024, accuracy: 0.002)
        XCTAssertEqual(q8Ratio, 34.0 / 128, accuracy: 0.002)
    }

    /// A stored type as small as the target is left alone (a q4_0 projection asked for q8_0);
    /// a larger one is re-encoded (q4_0, 4.5 bits per value, as nf4's 4.19); a NaN throws.
    func testProjectionsStoredAsSmallAreLeftAsStored() throws {
        var bytes = [UInt8](repeating: 0, count: DType.q4_0.byteCount(elements: 4 * 256)!)
        for b in 0..<(bytes.count / 18) { bytes[18 * b + 1] = 0x2C }  // d = 0.0625
        try bytes.withUnsafeBytes { raw in
            let stored = StoredTensor(dtype: .q4_0, shape: [4, 256], bytes: raw)
            XCTAssertNil(try BaseQuantization.encode(stored, as: .q8_0, name: "w"))
            XCTAssertEqual(try BaseQuantization.encode(stored, as: .nf4, name: "w")?.count, DType.nf4.byteCount(elements: 4 * 256))
        }
        // A NaN in a file's weights is an error, not a trap.
        var values = [Float](repeating: 0.5, count: 3 * 256)
        values[300] = .nan
        try values.withUnsafeBytes { raw in
            XCTAssertThrowsError(try BaseQuantization.encode(StoredTensor(dtype: .f32, shape: [3, 256], bytes: raw), as: .nf4, name: "w"))
        }
    }

    /// Loading the test models with --quantize: q8_0 quantizes every projection (plain, fused
    /// q/k/v and gate/up, GPT-2's transposed ones) and the logits stay within 8-bit noise; nf4
    /// leaves rows of 32 to 128 values as stored; a full fine-tune refuses to quantize.
    func testLoaderQuantizesExactlyTheBlockProjections() throws {
        for family in ["llama3", "phi3", "gpt2"] {
            let files = try ModelFiles(path: TinyTraining.models.appendingPathComponent(family).path)
            let c = files.configuration, projections = c.layers * (c.gatedMLP ? 7 : 6)
            let plain = try files.decoder(on: CPUBackend())
            let q8 = try files.decoder(on: CPUBackend(), quantize: .q8_0)
            let counts = BaseQuantization(q8.weights, dtype: .q8_0)
            XCTAssertEqual([counts.quantized, counts.leftAsStored], [projections, 0], family)
            XCTAssertEqual(q8.weights.tokenEmbedding.dtype, plain.weights.tokenEmbedding.dtype, "\(family): embeddings stay")
            XCTAssertEqual(q8.weights.blocks[0].attentionNorm.weight.dtype, plain.weights.blocks[0].attentionNorm.weight.dtype)
            let tokens: [Int32] = [1, 17, 42, 99, 5, 200, 3]
            let expected = plain.backend.download(plain.logits(tokens)), actual = q8.backend.download(q8.logits(tokens))
            let scale = expected.map(abs).max()!
            let worst = zip(expected, actual).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(worst, 0.05 * scale, "\(family): q8_0 logits")
            XCTAssertGreaterThan(worst, 0, "\(family): the weights were requantized")

            let nf4 = try files.decoder(on: CPUBackend(), quantize: .nf4)
            XCTAssertEqual(BaseQuantization(nf4.weights, dtype: .nf4).leftAsStored, projections - (family == "gpt2" ? c.layers : 0),
                           "\(family): only GPT-2's MLP down projection (inputs 256) is whole nf4 blocks")
            XCTAssertThrowsError(try files.decoder(on: CPUBackend(), trainable: true, quantize: .nf4), family)
            XCTAssertThrowsError(try files.decoder(on: CPUBackend(), quantize: .q4_K), family)
        }
    }
}
