// TrainableParameters: the tensors that train, each with its gradient buffer.
import FrugalCore
import FrugalFormats

/// The trainable tensors of a model (LoRA adapters, or weights in a full fine-tune) and their
/// f32 gradients, allocated once as `gradients` memory and accumulated into by backward.
public final class TrainableParameters: @unchecked Sendable {
    /// One trainable tensor and its gradient.
    public struct Parameter: @unchecked Sendable {
        /// A stable name (PEFT-style for LoRA: `…q_proj.lora_A.weight`).
        public let name: String
        /// The tensor the model computes with (f32).
        public let value: Tensor
        /// Its gradient (f32, same shape).
        public let gradient: Tensor
    }

    private struct Location: Hashable {
        let storage: ObjectIdentifier
        let offset: Int
    }

    public let parameters: [Parameter]
    private let index: [Location: Int]
    private let backend: TrainingBackend

    /// Allocates a zeroed gradient for each named tensor.
    public init(backend: TrainingBackend, named: [(String, Tensor)]) {
        self.backend = backend
        parameters = named.map { name, tensor in
            precondition(tensor.dtype == .f32, "trainable tensor '\(name)' must be f32, found \(tensor.dtype)")
            return Parameter(name: name, value: tensor, gradient: backend.zeros(tensor.shape, .f32, .gradients))
        }
        var index = [Location: Int]()
        for (i, p) in parameters.enumerated() {
            index[Location(storage: ObjectIdentifier(p.value.storage), offset: p.value.byteOffset)] = i
        }
        self.index = index
    }

    /// The gradient buffer of `tensor`, or nil when it does not train.
    public func gradient(of tensor: Tensor?) -> Tensor? {
        guard let tensor, let i = index[Location(storage: ObjectIdentifier(tensor.storage), offset: tensor.byteOffset)] else {
            return nil
        }
        return parameters[i].gradient
    }

    /// Number of trainable values.
    public var count: Int { parameters.reduce(0) { $0 + $1.value.count } }

    /// Sets every gradient to zero.
    public func zeroGradients() {
        for p in parameters { backend.zero(p.gradient) }
    }
}
