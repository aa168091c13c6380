// TrainableParameters: the tensors that train, each with its gradient buffer.
import FrugalCore
import FrugalFormats

/// The trainable tensors of a model (LoRA adapters, or weights in a full fine-tune: f32, or
/// bf16 under pure bf16) and their f32 gradients, allocated once as `gradients` memory and accumulated into by backward.
///
/// With gradients shared across blocks, every block's k-th parameter uses the same gradient
/// tensor: only one block's gradients exist at a time, which is enough when each block's update is
/// applied as soon as backward finishes that block (the fused optimizer step).
public final class TrainableParameters: @unchecked Sendable {
    /// One trainable tensor and its gradient.
    public struct Parameter: @unchecked Sendable {
        /// A stable name (PEFT-style for LoRA: `…q_proj.lora_A.weight`).
        public let name: String
        /// The tensor the model computes with: f32, or 16-bit under fp16, bf16 (the compute copy
        /// of the optimizer's f32 master) and pure bf16 (the weight stored in 16 bits, updated in
        /// place by the optimizer); read it with `download`, not `floats`.
        public internal(set) var value: Tensor
        /// Its gradient (f32, same shape).
        public let gradient: Tensor
        /// The decoder block it belongs to; nil for embeddings, the final norm, the head, a value head.
        public let block: Int?
    }

    private struct Location: Hashable {
        let storage: ObjectIdentifier
        let offset: Int
    }

    public private(set) var parameters: [Parameter]
    /// Whether blocks share their gradient tensors (see the type's description).
    public let sharesBlockGradients: Bool
    private var index: [Location: Int]
    private let backend: TrainingBackend

    /// Allocates a zeroed gradient for each named tensor.
    /// - Parameters:
    ///   - named: each tensor with its name and, for a block's tensor, the block's index.
    ///   - shareBlockGradients: give the k-th parameter of every block one gradient tensor
    ///     (blocks must list their parameters in the same order and shapes).
    public init(backend: TrainingBackend, named: [(name: String, tensor: Tensor, block: Int?)], shareBlockGradients: Bool = false) {
        self.backend = backend
        sharesBlockGradients = shareBlockGradients
        var shared = [Int: Tensor](), position = [Int: Int]()
        parameters = named.map { name, tensor, block in
            precondition([.f32, .f16, .bf16].contains(tensor.dtype),
                         "trainable tensor '\(name)' must be f32, f16 or bf16, found \(tensor.dtype)")
            var gradient: Tensor
            if shareBlockGradients, let block {
                let k = position[block, default: 0]
                position[block] = k + 1
                if let existing = shared[k] {
                    precondition(existing.shape == tensor.shape, "'\(name)' \(tensor.shape) cannot share the gradient of \(existing.shape)")
                    gradient = existing
                } else {
                    gradient = backend.zeros(tensor.shape, .f32, .gradients)
                    shared[k] = gradient
                }
            } else {
                gradient = backend.zeros(tensor.shape, .f32, .gradients)
            }
            return Parameter(name: name, value: tensor, gradient: gradient, block: block)
        }
        var index = [Location: Int]()
        for (i, p) in parameters.enumerated() {
            index[Location(storage: ObjectIdentifier(p.value.storage), offset: p.value.byteOffset)] = i
        }
        self.index = index
    }

    /// Replaces parameter `i`'s value by `tensor` (same shape, any trainable dtype), keeping its
    /// name, block and gradient: `Decoder.storeTrainable` swaps f32 tensors for 16-bit copies.
    public func replaceValue(at i: Int, with tensor: Tensor) {
        let old = parameters[i].value
        precondition(tensor.shape == old.shape && [.f32, .f16, .bf16].contains(tensor.dtype),
                     "'\(parameters[i].name)': \(old.shape) replaced by \(tensor.shape) \(tensor.dtype)")
        index[Location(storage: ObjectIdentifier(old.storage), offset: old.byteOffset)] = nil
        parameters[i].value = tensor
        index[Location(storage: ObjectIdentifier(tensor.storage), offset: tensor.byteOffset)] = i
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

    /// Sets every gradient to zero (each shared tensor once).
    public func zeroGradients() {
        var zeroed = Set<ObjectIdentifier>()
        backend.zero(parameters.filter { zeroed.insert(ObjectIdentifier($0.gradient.storage)).inserted }.map(\.gradient))
    }

    /// The parameters of block `index`, in order.
    public func block(_ index: Int) -> [Parameter] { parameters.filter { $0.block == index } }
}
