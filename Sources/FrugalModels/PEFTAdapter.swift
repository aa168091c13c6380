// PEFTAdapter: LoRA adapters saved as Hugging Face PEFT loads them.
import Foundation
import FrugalCore
import FrugalFormats

/// Writes `adapter_config.json` and `adapter_model.safetensors` in PEFT's layout, so that
/// `PeftModel.from_pretrained(base, folder)` loads Frugal's adapters.
public enum PEFTAdapter {
    /// Exports the LoRA adapters attached to `decoder` (their weights from `parameters`).
    /// - Parameters:
    ///   - baseModel: recorded as `base_model_name_or_path`.
    /// - Throws: `FrugalError.invalidArgument` when no adapter is attached; write errors.
    public static func export(decoder: Decoder, parameters: TrainableParameters, baseModel: String, to folder: URL) throws {
        let adapters = decoder.weights.blocks.flatMap { block in ProjectionRole.allCases.compactMap { block[$0]?.lora } }
        guard let first = adapters.first else { throw FrugalError.invalidArgument("no LoRA adapter to export") }
        let lora = parameters.parameters.filter { $0.name.contains(".lora_") }
        let tensors = lora.map { p in
            (name: "base_model.model." + p.name, dtype: DType.f32, shape: p.value.shape,
             bytes: decoder.backend.download(p.value).withUnsafeBytes { Array($0) })
        }
        let modules = Set(lora.compactMap { $0.name.components(separatedBy: ".lora_").first?.split(separator: ".").last.map(String.init) })
        let config: [String: Any] = [
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": baseModel,
            "r": first.rank, "lora_alpha": first.alpha, "lora_dropout": first.dropout,
            "use_rslora": first.scale != first.alpha / Float(first.rank),
            "target_modules": modules.sorted(), "bias": "none", "fan_in_fan_out": false, "inference_mode": true,
            "init_lora_weights": true, "modules_to_save": NSNull(), "layers_to_transform": NSNull(),
        ]
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try SafeTensorsWriter.write(tensors, metadata: ["format": "pt"], to: folder.appendingPathComponent("adapter_model.safetensors"))
        let json = try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
        try AtomicFile.write(json, to: folder.appendingPathComponent("adapter_config.json"))
    }
}
