// Forward activations stored in 16 bits (bf16, f16): gradients within the storage's rounding of
// the f32 run for every family's shape, checkpointing and offload still exact, and the tape half
// the size in the ledger.
import XCTest
import FrugalCore
import FrugalCPU
import FrugalFormats
@testable import FrugalModels

final class ActivationStorageTests: XCTestCase {
    static let fixtures = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("models")

    /// A fixture model with LoRA on every projection (its PEFT-free seed), and its batch.
    private func model(_ name: String, dropout: Float = 0) throws -> (Decoder, TrainableParameters, TrainingBatch) {
        let folder = Self.fixtures.appendingPathComponent(name)
        let expected = try SafeTensorsFile(path: folder.appendingPathComponent("expected.safetensors").path)
        let reference = try SafeTensorsFile(path: folder.appendingPathComponent("gradients.safetensors").path)
        let batch = TrainingBatch(tokens: try expected.floats("input_ids").map { Int32($0) },
                                  targets: try reference.floats("targets").map { Int32($0) },
                                  batch: try expected.info("input_ids").shape[0])
        let decoder = try ModelFiles(path: folder.path).decoder(on: CPUBackend(), trainable: false)
        let parameters = try decoder.attachLoRA(LoRAConfiguration(rank: 4, alpha: 8, dropout: dropout, targets: ["all-linear"]),
                                                seed: 7)
        // B starts at zero; give it values so every adapter's gradients flow both ways.
        var random = SplitMix64(seed: 11)
        for p in parameters.parameters where p.name.hasSuffix("lora_B.weight") {
            let buffer = p.value.floats
            for i in buffer.indices { buffer[i] = (random.nextUniform() - 0.5) * 0.2 }
        }
        return (decoder, parameters, batch)
    }

    /// The mean loss and every trainable gradient of one pass.
    private func pass(_ decoder: Decoder, _ parameters: TrainableParameters, _ batch: TrainingBatch,
                      activations: DType, checkpointing: Bool = false, offload: Bool = false,
                      training: Bool = false) -> (Double, [[Float]]) {
        parameters.zeroGradients()
        var random = SplitMix64(seed: 0)
        let count = batch.targetCount
        let options = PassOptions(checkpointing: checkpointing, offloadActivations: offload, gradientScale: 1 / Float(count),
                                  training: training, activations: activations)
        let loss = decoder.accumulateGradients(batch, into: parameters, options: options, random: &random) / Double(count)
        return (loss, parameters.parameters.map { decoder.backend.download($0.gradient) })
    }

    /// 16-bit storage rounds each saved activation once (relative 2⁻⁹ for bf16, 2⁻¹² for f16):
    /// the loss and every gradient tensor stay within a few tens of those roundings of the f32
    /// run (norm-wise: a ReLU's kink or a cancellation can flip single values), and differ from
    /// it (the activations really were stored in 16 bits). Measured worst: bf16 2.9% (OPT),
    /// f16 0.27% (Llama 3).
    func testSixteenBitGradientsTrackF32() throws {
        for name in ["llama3", "gemma", "opt", "qwen2", "gpt2"] {
            let (decoder, parameters, batch) = try model(name)
            let (loss, exact) = pass(decoder, parameters, batch, activations: .f32)
            for (dtype, tolerance) in [(DType.bf16, Float(5e-2)), (.f16, 6e-3)] {
                let (rounded, gradients) = pass(decoder, parameters, batch, activations: dtype)
                XCTAssertEqual(rounded, loss, accuracy: 1e-3 * loss, "\(name) \(dtype) loss")
                XCTAssertNotEqual(gradients, exact, "\(name) \(dtype): the gradients equal f32's bit for bit")
                for (p, (a, b)) in zip(parameters.parameters, zip(gradients, exact)) {
                    let error = zip(a, b).reduce(Float(0)) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot()
                    let norm = b.reduce(Float(0)) { $0 + $1 * $1 }.squareRoot()
                    XCTAssertGreaterThan(norm, 0, "\(name): '\(p.name)' has no gradient")
                    XCTAssertLessThanOrEqual(error, tolerance * norm, "\(name) \(dtype) '\(p.name)': |Δ| \(error) of |g| \(norm)")
                }
            }
        }
    }

    /// Recomputing blocks from 16-bit inputs, moved to the host and back or not, repeats the same
    /// rounded ops: bit-for-bit the gradients of the run that kept every tape (dropout on).
    func testCheckpointingAndOffloadStayExact() throws {
        let (decoder, parameters, batch) = try model("llama3", dropout: 0.1)
        let (loss, kept) = pass(decoder, parameters, batch, activations: .bf16, training: true)
        for offload in [false, true] {
            let (again, recomputed) = pass(decoder, parameters, batch, activations: .bf16, checkpointing: true, offload: offload,
                                           training: true)
            XCTAssertEqual(again, loss, "offload \(offload)")
            XCTAssertEqual(recomputed, kept, "checkpointed (offload \(offload)) gradients differ")
        }
    }

    /// A GPU's GEMMs on a 16-bit model read every output gradient in 16 bits, and the MLP's
    /// activation backward writes the gate's and up's so (`gradientOperandType`). The CPU does the
    /// same under `roundsGradientOperands`, for a gated (SwiGLU) and a plain (GELU, biased) MLP:
    /// the forward is untouched, and every gradient stays within bf16's rounding of the run that
    /// reads f32 gradients, and differs from it.
    func testSixteenBitGradientOperands() throws {
        var llama = ModelConfiguration.smolLM2_135M
        llama.layers = 2
        let gpt2 = ModelConfiguration(architecture: .gpt2, modelType: "gpt2", vocabSize: 4096, hiddenSize: 256,
                                      intermediateSize: 1024, layers: 2, heads: 4, kvHeads: 4, headDim: 64, maxPositions: 128,
                                      normEps: 1e-5, normKind: .layer, activation: .geluTanh, gatedMLP: false,
                                      tiedEmbeddings: true, attentionBias: true, outputBias: true, mlpBias: true,
                                      learnedPositions: true)
        for c in [llama, gpt2] {
            let backend = CPUBackend()
            let decoder = Decoder.random(c, on: backend, category: .weights, dtype: .bf16, seed: 1)
            let parameters = try decoder.attachLoRA(LoRAConfiguration(rank: 4, alpha: 8, targets: ["all-linear"]), seed: 2,
                                                    dtype: .bf16)
            var random = SplitMix64(seed: 11)
            for p in parameters.parameters where p.name.hasSuffix("lora_B.weight") {
                let values = (0..<p.value.count).map { _ in (random.nextUniform() - 0.5) * 0.2 }
                backend.copy(p.value, at: 0, from: values.withUnsafeBytes { backend.upload($0, p.value.shape, .f32, .workspace) })
            }
            let ids = (0..<96).map { Int32(($0 * 7919) % c.vocabSize) }
            let batch = TrainingBatch(tokens: ids, targets: ids.map { ($0 + 1) % Int32(c.vocabSize) }, batch: 2)
            let (loss, exact) = pass(decoder, parameters, batch, activations: .bf16)
            backend.roundsGradientOperands = true
            let (again, rounded) = pass(decoder, parameters, batch, activations: .bf16)
            XCTAssertEqual(again, loss, "\(c.modelType): the forward changed")
            XCTAssertNotEqual(rounded, exact, "\(c.modelType): no gradient was read in 16 bits")
            for (p, (a, b)) in zip(parameters.parameters, zip(rounded, exact)) {
                let error = zip(a, b).reduce(Float(0)) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot()
                let norm = b.reduce(Float(0)) { $0 + $1 * $1 }.squareRoot()
                XCTAssertGreaterThan(norm, 0, "\(c.modelType): '\(p.name)' has no gradient")
                XCTAssertLessThanOrEqual(error, 2e-2 * norm, "\(c.modelType) '\(p.name)': |Δ| \(error) of |g| \(norm)")
            }
        }
    }

    /// Without checkpointing the tapes dominate: stored in bf16 they take half the bytes, and the
    /// activations' peak falls by what `frugal plan`'s accounting says (gradients stay f32).
    func testBF16HalvesTheTapeInTheLedger() throws {
        var c = ModelConfiguration.smolLM2_135M
        c.layers = 6
        func peak(_ dtype: DType) throws -> Int {
            let backend = CPUBackend()
            let decoder = Decoder.random(c, on: backend, category: .weights, dtype: .f32, seed: 1)
            let parameters = try decoder.attachLoRA(LoRAConfiguration(rank: 8, alpha: 16, targets: ["q", "k", "v", "o"]), seed: 2)
            let ids = (0..<128).map { Int32(($0 * 7919) % c.vocabSize) }
            let batch = TrainingBatch(tokens: ids, targets: ids.map { ($0 + 1) % Int32(c.vocabSize) }, batch: 2)
            var random = SplitMix64(seed: 3)
            _ = decoder.accumulateGradients(batch, into: parameters, options: PassOptions(activations: dtype), random: &random)
            return backend.ledger.snapshot.peak[.activations]!
        }
        let f32 = try peak(.f32), bf16 = try peak(.bf16)
        // Per token: six tapes of 2·(4·576 + 2·576 + 2·192 + 3·1536 + 4·8) bytes and the embedding's
        // output, then f32 ends and backward (see MemoryPlan): 0.60 of the f32 run's bytes.
        let ratio = Double(bf16) / Double(f32)
        XCTAssertLessThan(ratio, 0.66, "bf16 \(bf16) bytes vs f32 \(f32)")
        XCTAssertGreaterThan(ratio, 0.5, "bf16 \(bf16) bytes vs f32 \(f32): gradients are f32, so not below half")
    }
}
