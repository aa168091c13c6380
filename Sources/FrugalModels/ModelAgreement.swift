// ModelAgreement: a whole model — logits, LoRA and full fine-tune losses and gradients — run on a
// candidate backend (the GPU) and checked against a reference backend (the CPU) and against the
// values Hugging Face transformers + PEFT stored beside the model (scripts/make_gradient_fixtures.py).
import Foundation
import FrugalCore
import FrugalFormats

/// Whole-model checks of one fixture folder: `model.safetensors` + `config.json`,
/// `expected.safetensors` (input ids, transformers' logits) and `gradients.safetensors` (targets,
/// losses, PEFT's adapter values and gradients), as `scripts/make_gradient_fixtures.py` writes them.
public struct ModelAgreement {
    /// Tolerances relative to the largest reference magnitude (f32 on both sides; sums in other orders).
    public static let logitsTolerance = 1e-4
    public static let gradientTolerance = 5e-4

    let folder: URL
    let name: String
    let expected: SafeTensorsFile
    let reference: SafeTensorsFile
    let batch: TrainingBatch

    public init(folder: URL) throws {
        self.folder = folder
        name = folder.lastPathComponent
        expected = try SafeTensorsFile(path: folder.appendingPathComponent("expected.safetensors").path)
        reference = try SafeTensorsFile(path: folder.appendingPathComponent("gradients.safetensors").path)
        let tokens = try expected.floats("input_ids").map { Int32($0) }
        let targets = try reference.floats("targets").map { Int32($0) }
        batch = TrainingBatch(tokens: tokens, targets: targets, batch: try expected.info("input_ids").shape[0])
    }

    /// Runs every check with the model on `candidate` and on `reference`; `report` gets each result
    /// as soon as it is known.
    public func run(candidate: TrainingBackend, reference cpu: TrainingBackend,
                    report: (CheckResult) -> Void = { _ in }) throws -> [CheckResult] {
        var results = [CheckResult]()
        // A tensor far smaller than the check's largest (a key bias's gradient is zero but for
        // rounding: softmax ignores a shift shared by a row) is compared at 1% of that largest.
        func record(_ check: String, _ comparisons: [(String, [Float], [Float])], tolerance: Double) {
            var worst = 0.0, detail = ""
            let floor = comparisons.map { CheckResult.largestMagnitude($0.1) }.max()! * 0.01
            for (what, expected, actual) in comparisons {
                let (error, i) = CheckResult.worstDifference(expected, actual, floor: floor)
                if !(error <= worst) {
                    worst = error
                    detail = expected.count == actual.count ? "\(what)[\(i)]: reference \(expected[i]), candidate \(actual[i])"
                        : "\(what): \(expected.count) reference values, \(actual.count) candidate"
                }
            }
            let result = CheckResult(name: "\(name) \(check)", passed: worst <= tolerance, maxError: worst, tolerance: tolerance,
                                     detail: worst <= tolerance ? "\(comparisons.count) tensors" : detail)
            report(result)
            results.append(result)
        }
        let files = try ModelFiles(path: folder.path)

        // Logits: against transformers and against the reference backend.
        let gpu = try files.decoder(on: candidate), host = try files.decoder(on: cpu)
        let ids = batch.tokens, rows = batch.batch
        let gpuLogits = candidate.download(gpu.logits(ids, batch: rows))
        record("logits vs transformers", [("logits", try expected.floats("logits"), gpuLogits)], tolerance: Self.logitsTolerance)
        record("logits vs CPU", [("logits", cpu.download(host.logits(ids, batch: rows)), gpuLogits)], tolerance: Self.logitsTolerance)

        // LoRA with PEFT's adapter values: loss and every adapter gradient, against PEFT and the CPU.
        let targets = Self.loraTargets(self.reference)
        let lora = LoRAConfiguration(rank: 4, alpha: 8, dropout: 0, targets: targets)
        let gpuAdapters = try gpu.attachLoRA(lora, seed: 7), hostAdapters = try host.attachLoRA(lora, seed: 7)
        try loadAdapters(gpuAdapters, candidate)
        try loadAdapters(hostAdapters, cpu)
        let gpuLoss = meanLoss(gpu, gpuAdapters), hostLoss = meanLoss(host, hostAdapters)
        let peftLoss = try self.reference.floats("loss_lora")
        var peft = [("loss", peftLoss, [Float(gpuLoss)])], versusCPU = [("loss", [Float(hostLoss)], [Float(gpuLoss)])]
        for (g, h) in zip(gpuAdapters.parameters, hostAdapters.parameters) {
            let value = candidate.download(g.gradient)
            if self.reference.contains("lora_grad." + g.name) {
                peft.append((g.name, try self.reference.floats("lora_grad." + g.name), value))
            }
            versusCPU.append((g.name, cpu.download(h.gradient), value))
        }
        record("LoRA loss and gradients vs transformers + PEFT", peft, tolerance: Self.gradientTolerance)
        record("LoRA loss and gradients vs CPU", versusCPU, tolerance: Self.gradientTolerance)

        // The same with activation checkpointing on the candidate: recomputed blocks, same gradients.
        gpuAdapters.zeroGradients()
        let checkpointedLoss = meanLoss(gpu, gpuAdapters, checkpointing: true)
        record("LoRA with checkpointing vs without", [("loss", [Float(gpuLoss)], [Float(checkpointedLoss)])]
               + zip(versusCPU.dropFirst(), gpuAdapters.parameters).map { ($1.name, $0.2, candidate.download($1.gradient)) },
               tolerance: Self.gradientTolerance)

        // Full fine-tune: loss against transformers, every weight's gradient against the CPU.
        let gpuFull = try files.decoder(on: candidate, trainable: true), hostFull = try files.decoder(on: cpu, trainable: true)
        let gpuWeights = try gpuFull.allWeights(), hostWeights = try hostFull.allWeights()
        let fullLoss = meanLoss(gpuFull, gpuWeights), hostFullLoss = meanLoss(hostFull, hostWeights)
        record("full fine-tune loss vs transformers", [("loss", try self.reference.floats("loss_full"), [Float(fullLoss)])],
               tolerance: Self.gradientTolerance)
        record("full fine-tune gradients vs CPU",
               [("loss", [Float(hostFullLoss)], [Float(fullLoss)])]
               + zip(gpuWeights.parameters, hostWeights.parameters).map { ($0.name, cpu.download($1.gradient), candidate.download($0.gradient)) },
               tolerance: Self.gradientTolerance)
        return results
    }

    /// Forward and backward with the mean-loss scale and no dropout; the mean loss.
    private func meanLoss(_ decoder: Decoder, _ parameters: TrainableParameters, checkpointing: Bool = false) -> Double {
        var random = SplitMix64(seed: 0)
        let count = batch.targetCount
        let options = PassOptions(checkpointing: checkpointing, gradientScale: 1 / Float(count), training: false)
        return decoder.accumulateGradients(batch, into: parameters, options: options, random: &random) / Double(count)
    }

    /// Sets each adapter's A and B to PEFT's values stored as `lora.<name>`.
    private func loadAdapters(_ parameters: TrainableParameters, _ backend: TrainingBackend) throws {
        for p in parameters.parameters {
            let values = try reference.floats("lora." + p.name)
            guard values.count == p.value.count else {
                throw FrugalError.invalidArgument("\(name): PEFT's '\(p.name)' has \(values.count) values, Frugal's shape is \(p.value.shape)")
            }
            let staged = values.withUnsafeBytes { backend.upload($0, p.value.shape, .f32, .workspace) }
            backend.copy(p.value, at: 0, from: staged)
        }
    }

    /// The projection roles PEFT adapted, read from the stored adapter names.
    static func loraTargets(_ file: SafeTensorsFile) -> [String] {
        let modules = Set(file.names.filter { $0.hasPrefix("lora.") && $0.hasSuffix(".lora_A.weight") }.map {
            String($0.dropFirst("lora.".count).dropLast(".lora_A.weight".count).split(separator: ".").last ?? "")
        })
        let roles: [String: String] = ["q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o", "out_proj": "o",
                                       "gate_proj": "gate", "up_proj": "up", "fc1": "up", "c_fc": "up",
                                       "down_proj": "down", "fc2": "down"]
        var targets = Set(modules.compactMap { roles[$0] })
        // GPT-2's c_proj is both attn.c_proj (o) and mlp.c_proj (down).
        if modules.contains("c_proj") { targets.formUnion(["o", "down"]) }
        return targets.sorted()
    }
}
