// The two weight sources: a Hugging Face safetensors folder and a GGUF file.
import FrugalCore
import FrugalFormats
import Foundation

/// The tensors of a Hugging Face folder (`model.safetensors` or a sharded index).
final class SafeTensorsSource: WeightSource {
    let folder: SafeTensorsFolder
    var path: String { folder.path }
    var tensorNames: [String] { folder.names }

    init(folder url: URL) throws { folder = try SafeTensorsFolder(folder: url) }

    func tensor(_ name: String) throws -> StoredTensor? {
        // Older GPT-2 and OPT checkpoints store names without the `transformer.` / `model.` prefix.
        let candidates = [name] + ["transformer.", "model."].compactMap { name.hasPrefix($0) ? String(name.dropFirst($0.count)) : nil }
        guard let found = candidates.first(where: folder.contains) else { return nil }
        let info = try folder.info(found)
        return StoredTensor(dtype: info.dtype, shape: info.shape, bytes: try folder.data(found))
    }
}

/// The tensors of a GGUF file, still packed.
final class GGUFSource: WeightSource {
    let file: GGUFFile
    var path: String { file.path }
    var tensorNames: [String] { file.tensors.map(\.name) }

    init(file: GGUFFile) { self.file = file }

    func tensor(_ name: String) throws -> StoredTensor? {
        guard let info = file.tensor(name) else { return nil }
        return StoredTensor(dtype: info.dtype, shape: info.shape, bytes: try file.tensorData(name))
    }
}
