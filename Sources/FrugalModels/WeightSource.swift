// WeightSource: stored tensors by name, from a safetensors folder or a GGUF file.
import FrugalCore
import FrugalFormats

/// One stored tensor: dtype, shape (outermost first) and its bytes, valid while the source lives.
public struct StoredTensor {
    public var dtype: DType
    public var shape: Shape
    public var bytes: UnsafeRawBufferPointer
}

/// A container of named tensors (a safetensors folder, a GGUF file).
public protocol WeightSource: AnyObject {
    /// The file or folder, for error messages.
    var path: String { get }
    /// Every tensor name in the source.
    var tensorNames: [String] { get }
    /// The tensor called `name`, or nil when absent.
    func tensor(_ name: String) throws -> StoredTensor?
}

extension WeightSource {
    /// The tensor called `name`, or `FrugalError.missingTensor`.
    func require(_ name: String) throws -> StoredTensor {
        guard let t = try tensor(name) else { throw FrugalError.missingTensor(name: name, path: path) }
        return t
    }
}
