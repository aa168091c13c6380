// PEFTAdapter: LoRA adapters saved and loaded as Hugging Face PEFT does.
import Foundation
import FrugalCore
import FrugalFormats

/// Writes and reads `adapter_config.json` and `adapter_model.safetensors` in PEFT's layout, so
/// that `PeftModel.from_pretrained(base, folder)` loads Frugal's adapters and Frugal loads PEFT's.
///
/// Tensors are named `base_model.model.<module>.lora_A.weight` (rank, inputs) and
/// `….lora_B.weight` (outputs, rank), `<module>` being the Hugging Face module path
/// (`model.layers.3.self_attn.q_proj`).
///
/// Fused projections (Phi-3's `qkv_proj` and `gate_up_proj`, GPT-2's `c_attn`) are one module
/// to PEFT but separate adapters in Frugal. They translate exactly both ways:
/// - export: adapters of the parts sharing one `A` become one adapter with `B` stacked by
///   rows; otherwise `A` is stacked by rows and `B` is block-diagonal, so the fused adapter's
///   rank is the sum of the parts' (recorded in `rank_pattern` / `alpha_pattern`, with alpha
///   chosen so the scale is unchanged);
/// - load: each part gets the whole `A` and its rows of `B`.
public enum PEFTAdapter {
    /// Exports the LoRA adapters attached to `decoder`.
    /// - Parameters:
    ///   - parameters: the trainable set the adapters came with (their values are the adapters' tensors).
    ///   - baseModel: recorded as `base_model_name_or_path`.
    /// - Throws: `FrugalError.invalidArgument` when no adapter is attached, or when the parts
    ///   of a fused projection have different scales or rsLoRA settings; write errors.
    public static func export(decoder: Decoder, parameters: TrainableParameters? = nil, baseModel: String,
                              to folder: URL) throws {
        let modules = PEFTModule.all(of: decoder)
        var tensors: [(name: String, dtype: DType, shape: Shape, bytes: [UInt8])] = []
        var adapted: [(module: PEFTModule, rank: Int, scale: Float)] = []
        var first: LoRAAdapter?
        for module in modules {
            let parts = module.parts.compactMap { part in decoder.weights.blocks[part.block][part.role]?.lora.map { (part, $0) } }
            guard !parts.isEmpty else { continue }
            first = first ?? parts[0].1
            let fused = try fusedAdapter(module, parts, backend: decoder.backend)
            tensors.append((name: "base_model.model." + module.name + ".lora_A.weight", dtype: .f32,
                            shape: [fused.rank, module.inputs], bytes: try SafeTensorsWriter.bytes(of: fused.a, as: .f32)))
            tensors.append((name: "base_model.model." + module.name + ".lora_B.weight", dtype: .f32,
                            shape: [module.outputs, fused.rank], bytes: try SafeTensorsWriter.bytes(of: fused.b, as: .f32)))
            adapted.append((module, fused.rank, fused.scale))
        }
        guard let first else { throw FrugalError.invalidArgument("no LoRA adapter to export") }
        // Rank 1 scales the same either way; the other adapters must agree.
        let attached = modules.flatMap { m in m.parts.compactMap { decoder.weights.blocks[$0.block][$0.role]?.lora } }
            .filter { $0.rank > 1 }
        let rsLoRA = attached.first?.isRankStabilized ?? false
        guard attached.allSatisfy({ $0.isRankStabilized == rsLoRA }) else {
            throw FrugalError.invalidArgument("adapters mix rsLoRA and plain LoRA scaling: PEFT has one setting")
        }
        // Modules whose rank or scale differ from the first adapter's get their own entries.
        var rankPattern: [String: Int] = [:], alphaPattern: [String: Double] = [:]
        for (module, rank, scale) in adapted where rank != first.rank || scale != first.scale {
            rankPattern[module.name] = rank
            alphaPattern[module.name] = Double(scale * (rsLoRA ? Float(rank).squareRoot() : Float(rank)))
        }
        let config: [String: Any] = [
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": baseModel,
            "r": first.rank, "lora_alpha": Double(first.alpha), "lora_dropout": Double(first.dropout),
            "use_rslora": rsLoRA, "target_modules": targetModules(adapted.map(\.module.name), all: modules),
            "rank_pattern": rankPattern, "alpha_pattern": alphaPattern,
            "bias": "none", "fan_in_fan_out": decoder.configuration.architecture == .gpt2, "inference_mode": true,
            "init_lora_weights": true, "use_dora": false, "modules_to_save": NSNull(), "layers_to_transform": NSNull(),
        ]
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try SafeTensorsWriter.write(tensors, metadata: ["format": "pt"], to: folder.appendingPathComponent("adapter_model.safetensors"))
        let json = try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        try AtomicFile.write(json, to: folder.appendingPathComponent("adapter_config.json"))
    }

    /// Attaches the LoRA adapters of a PEFT folder to `decoder` and returns them as the trainable set.
    ///
    /// Ranks come from the tensors' shapes; alpha from `alpha_pattern` or `lora_alpha`; the
    /// scale is alpha/rank (alpha/√rank with `use_rslora`). Adapters already attached to a
    /// projection the folder adapts are replaced.
    /// - Parameters:
    ///   - folder: holds `adapter_config.json` and `adapter_model.safetensors`.
    /// - Returns: the adapters' tensors, named as `attachLoRA` names them (fused modules' parts
    ///   by their own role's module path).
    /// - Throws: `FrugalError.missingFile` for a missing file; `FrugalError.malformedFile` for
    ///   an unreadable config, a tensor name that is not a LoRA weight of a module the model has,
    ///   or an A without its B; `FrugalError.shapeMismatch` for tensors that do not fit the
    ///   projection; `FrugalError.invalidArgument` for PEFT features Frugal does not implement
    ///   (DoRA, trained biases, modules_to_save, non-LoRA adapters).
    @discardableResult
    public static func load(from folder: URL, into decoder: Decoder) throws -> TrainableParameters {
        guard let backend = decoder.backend as? TrainingBackend else {
            throw FrugalError.invalidArgument("this backend cannot hold LoRA adapters")
        }
        let config = try Config(folder: folder)
        let weightsURL = folder.appendingPathComponent("adapter_model.safetensors")
        guard FileManager.default.fileExists(atPath: weightsURL.path) else {
            let bin = FileManager.default.fileExists(atPath: folder.appendingPathComponent("adapter_model.bin").path)
            throw FrugalError.missingFile(path: folder.path, what: bin
                ? "adapter_model.safetensors (adapter_model.bin, PyTorch's pickle format, is not read: save with safe_serialization=True)"
                : "adapter_model.safetensors")
        }
        let file = try SafeTensorsFile(url: weightsURL)
        func fail(_ problem: String) -> FrugalError { .malformedFile(path: weightsURL.path, problem: problem) }

        // Tensor names → module paths.
        var moduleNames = Set<String>()
        for name in file.names {
            guard let module = Self.module(of: name) else {
                throw fail("tensor '\(name)' is not a LoRA weight (base_model.model.<module>.lora_A.weight or lora_B.weight)")
            }
            moduleNames.insert(module)
        }
        let modules = Dictionary(PEFTModule.all(of: decoder).map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var named: [(name: String, tensor: Tensor, block: Int?)] = []
        let naming = TensorNaming.huggingFace(decoder.configuration.architecture)
        for moduleName in moduleNames.sorted(by: Self.modelOrder) {
            guard let module = modules[moduleName] else {
                throw fail("the adapter adapts module '\(moduleName)', which this \(decoder.configuration.modelType) model does not have as a block projection (a different base model, or a module Frugal does not adapt)")
            }
            let aName = "base_model.model." + moduleName + ".lora_A.weight", bName = "base_model.model." + moduleName + ".lora_B.weight"
            guard file.contains(aName) else { throw fail("'\(bName)' has no '\(aName)'") }
            guard file.contains(bName) else { throw fail("'\(aName)' has no '\(bName)'") }
            let aShape = try file.info(aName).shape, bShape = try file.info(bName).shape
            guard aShape.rank == 2, aShape[0] > 0 else {
                throw FrugalError.shapeMismatch(name: aName, expected: [aShape.rank == 2 ? aShape[0] : 1, module.inputs], found: aShape)
            }
            let rank = aShape[0]
            guard aShape == Shape([rank, module.inputs]) else {
                throw FrugalError.shapeMismatch(name: aName, expected: [rank, module.inputs], found: aShape)
            }
            guard bShape == Shape([module.outputs, rank]) else {
                throw FrugalError.shapeMismatch(name: bName, expected: [module.outputs, rank], found: bShape)
            }
            let a = try file.floats(aName), b = try file.floats(bName)
            let lora = LoRAConfiguration(rank: rank, alpha: config.alpha(for: moduleName), dropout: config.dropout,
                                         targets: [], rankStabilized: config.rsLoRA)
            var row = 0
            for part in module.parts {
                guard let linear = decoder.weights.blocks[part.block][part.role] else { continue }
                let adapter = LoRAAdapter(backend: backend, inputs: linear.inputs, outputs: linear.outputs, lora,
                                          seed: UInt64(part.block * 16 + part.role.ordinal))
                Self.set(adapter.a, a, backend: backend)
                Self.set(adapter.b, Array(b[(row * rank)..<((row + linear.outputs) * rank)]), backend: backend)
                row += linear.outputs
                decoder.weights.blocks[part.block][part.role]?.lora = adapter
                let path = naming.module(part.role, part.block)
                named.append((path + ".lora_A.weight", adapter.a, part.block))
                named.append((path + ".lora_B.weight", adapter.b, part.block))
            }
        }
        guard !named.isEmpty else { throw fail("no LoRA weights") }
        return TrainableParameters(backend: backend, named: named)
    }

    // MARK: - Pieces

    /// The module path of `base_model.model.<module>.lora_A.weight` (or `lora_B`).
    static func module(of name: String) -> String? {
        let prefix = "base_model.model."
        guard name.hasPrefix(prefix) else { return nil }
        for suffix in [".lora_A.weight", ".lora_B.weight"] where name.hasSuffix(suffix) {
            let module = name.dropFirst(prefix.count).dropLast(suffix.count)
            return module.isEmpty ? nil : String(module)
        }
        return nil
    }

    /// Sorts module paths by layer number, then by name.
    static func modelOrder(_ a: String, _ b: String) -> Bool {
        func layer(_ s: String) -> Int { s.split(separator: ".").lazy.compactMap { Int($0) }.first ?? -1 }
        return (layer(a), a) < (layer(b), b)
    }

    /// Copies `values` into the f32 tensor `tensor` on `backend`.
    static func set(_ tensor: Tensor, _ values: [Float], backend: Backend) {
        precondition(values.count == tensor.count)
        let staged = values.withUnsafeBytes { backend.upload($0, tensor.shape, .f32, .workspace) }
        backend.copy(tensor, at: 0, from: staged)
    }

    /// One PEFT adapter (A, B as row-major floats) for `module` from the adapters of its parts.
    private static func fusedAdapter(_ module: PEFTModule, _ parts: [(PEFTModule.Part, LoRAAdapter)],
                                     backend: Backend) throws -> (a: [Float], b: [Float], rank: Int, scale: Float) {
        let scale = parts[0].1.scale
        if module.parts.count == 1 {
            let lora = parts[0].1
            return (backend.download(lora.a), backend.download(lora.b), lora.rank, scale)
        }
        guard parts.allSatisfy({ $0.1.scale == scale }) else {
            throw FrugalError.invalidArgument("the adapters of the parts of '\(module.name)' have different scales: PEFT adapts it as one module")
        }
        let aValues = parts.map { backend.download($0.1.a) }
        let shared = parts.allSatisfy { $0.1.rank == parts[0].1.rank } && aValues.allSatisfy { $0 == aValues[0] }
        let rank = shared ? parts[0].1.rank : parts.reduce(0) { $0 + $1.1.rank }
        var b = [Float](repeating: 0, count: module.outputs * rank)
        var row = 0, column = 0
        for part in module.parts {
            guard let outputs = module.outputs(of: part) else { continue }
            defer { row += outputs }
            guard let (_, lora) = parts.first(where: { $0.0 == part }) else { continue }
            let values = backend.download(lora.b)  // (outputs, lora.rank)
            for r in 0..<outputs {
                for c in 0..<lora.rank { b[(row + r) * rank + column + c] = values[r * lora.rank + c] }
            }
            if !shared { column += lora.rank }
        }
        return (shared ? aValues[0] : aValues.flatMap { $0 }, b, rank, scale)
    }

    /// PEFT's `target_modules`: the last name component of each adapted module when those
    /// names pick exactly the adapted modules, else the full module paths.
    private static func targetModules(_ adapted: [String], all: [PEFTModule]) -> [String] {
        func last(_ path: String) -> String { String(path.split(separator: ".").last ?? Substring(path)) }
        let short = Set(adapted.map(last))
        let matched = Set(all.map(\.name).filter { short.contains(last($0)) })
        return matched == Set(adapted) ? short.sorted() : adapted.sorted(by: modelOrder)
    }

    /// The fields of `adapter_config.json` that loading uses.
    private struct Config {
        var alpha: Float
        var dropout: Float
        var rsLoRA: Bool
        var alphaPattern: [String: Float]

        init(folder: URL) throws {
            let url = folder.appendingPathComponent("adapter_config.json")
            guard FileManager.default.fileExists(atPath: url.path) else {
                throw FrugalError.missingFile(path: folder.path, what: "adapter_config.json (not a PEFT adapter folder)")
            }
            func fail(_ problem: String) -> FrugalError { .malformedFile(path: url.path, problem: problem) }
            guard let object = try? JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any] else {
                throw fail("not a JSON object")
            }
            if let type = object["peft_type"] as? String, type != "LORA" {
                throw FrugalError.invalidArgument("\(url.path): peft_type \(type) is not supported (LORA only)")
            }
            if object["use_dora"] as? Bool == true {
                throw FrugalError.invalidArgument("\(url.path): DoRA adapters (use_dora) are not supported")
            }
            if let bias = object["bias"] as? String, bias != "none" {
                throw FrugalError.invalidArgument("\(url.path): trained biases (bias: \(bias)) are not supported")
            }
            if let saved = object["modules_to_save"], !(saved is NSNull), (saved as? [Any])?.isEmpty != true {
                throw FrugalError.invalidArgument("\(url.path): modules_to_save (fully trained modules) are not supported")
            }
            // Ranks are read from the tensors' shapes (`r` and `rank_pattern` say the same).
            guard let alpha = (object["lora_alpha"] as? NSNumber)?.floatValue else { throw fail("'lora_alpha' must be a number") }
            self.alpha = alpha
            dropout = (object["lora_dropout"] as? NSNumber)?.floatValue ?? 0
            rsLoRA = object["use_rslora"] as? Bool ?? false
            alphaPattern = [:]
            for (key, value) in object["alpha_pattern"] as? [String: Any] ?? [:] {
                guard let number = (value as? NSNumber)?.floatValue else { throw fail("alpha_pattern['\(key)'] must be a number") }
                alphaPattern[key] = number
            }
        }

        /// Alpha of `module`: the first `alpha_pattern` key matching the end of its path, as PEFT matches it.
        func alpha(for module: String) -> Float {
            for (key, value) in alphaPattern.sorted(by: { $0.key < $1.key }) {
                if module == key || module.hasSuffix("." + key) { return value }
                if let regex = try? NSRegularExpression(pattern: "^(.*\\.)?(\(key))$"),
                   regex.firstMatch(in: module, range: NSRange(module.startIndex..., in: module)) != nil { return value }
            }
            return alpha
        }
    }
}

extension LoRAAdapter {
    /// Whether the scale is alpha/√rank (rsLoRA) rather than alpha/rank.
    var isRankStabilized: Bool { rank > 1 && scale != alpha / Float(rank) && scale == alpha / Float(rank).squareRoot() }
}

/// A projection as PEFT sees it: a Hugging Face module path and the Frugal projections it
/// covers (several for a fused projection, concatenated by rows in order).
struct PEFTModule {
    struct Part: Equatable {
        let block: Int
        let role: ProjectionRole
    }

    let name: String
    let parts: [Part]
    let inputs: Int
    let outputs: Int
    private let partOutputs: [Int]

    /// Rows of the fused weight that `part` holds.
    func outputs(of part: Part) -> Int? { parts.firstIndex(of: part).map { partOutputs[$0] } }

    /// Every adaptable projection of `decoder`'s blocks, in model order.
    static func all(of decoder: Decoder) -> [PEFTModule] {
        let naming = TensorNaming.huggingFace(decoder.configuration.architecture)
        var modules: [PEFTModule] = []
        for (i, block) in decoder.weights.blocks.enumerated() {
            func add(_ name: String, _ roles: [ProjectionRole]) {
                let linears = roles.compactMap { role in block[role].map { (role, $0) } }
                guard !linears.isEmpty else { return }
                modules.append(PEFTModule(name: name, parts: linears.map { Part(block: i, role: $0.0) },
                                          inputs: linears[0].1.inputs, outputs: linears.reduce(0) { $0 + $1.1.outputs },
                                          partOutputs: linears.map(\.1.outputs)))
            }
            if let fused = naming.fusedQKV {
                add(fused(i), [.q, .k, .v])
            } else {
                for role in [ProjectionRole.q, .k, .v] { add(naming.module(role, i), [role]) }
            }
            add(naming.module(.o, i), [.o])
            if let fused = naming.fusedGateUp {
                add(fused(i), [.gate, .up])
            } else {
                if block.gate != nil { add(naming.module(.gate, i), [.gate]) }
                add(naming.module(.up, i), [.up])
            }
            add(naming.module(.down, i), [.down])
        }
        return modules
    }
}
