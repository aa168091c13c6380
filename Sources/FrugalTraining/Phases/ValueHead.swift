// ValueHead: a scalar head on the decoder's final hidden states — the reward model's score and
// PPO's critic — with its backward and its file.
import Foundation
import FrugalCore
import FrugalFormats
import FrugalModels

/// A scalar head on the decoder's final hidden states, `v = h·w` with `w` (1, embedding dim) in
/// f32 (bf16 under pure bf16), trained: the reward model's score and PPO's critic.
public final class ValueHead: @unchecked Sendable {
    /// (1, embedding dim)
    public private(set) var weight: Tensor
    /// The head as a trainable set of its own (`v_head.weight`).
    public let parameters: TrainableParameters
    let backend: TrainingBackend

    /// A head of zeros (every score starts at 0), or of `values` (rounded to nearest even when
    /// `dtype` is bf16: the run's `PrecisionPolicy.trainableDType`).
    public init(backend: TrainingBackend, width: Int, values: [Float]? = nil, dtype: DType = .f32) {
        self.backend = backend
        weight = backend.zeros([1, width], dtype, .trainable)
        if let values {
            precondition(values.count == width, "value head of \(width) values, given \(values.count)")
            let uploaded = values.withUnsafeBytes { backend.upload($0, [1, width], .f32, .workspace) }
            backend.copy(weight, at: 0, from: uploaded)
        }
        parameters = TrainableParameters(backend: backend, named: [("v_head.weight", weight, nil)])
    }

    /// Replaces the f32 head by its copy in `dtype` (f16 or bf16, rounded to nearest even), in
    /// `weight` and `parameters`: fp16 and bf16's 16-bit compute copy, made once the optimizer
    /// holds the f32 master (see `Decoder.storeTrainable`). A 16-bit head is left as it is.
    public func storeTrainable(as dtype: DType) {
        guard weight.dtype == .f32, dtype != .f32 else { return }
        let copy = backend.empty(weight.shape, dtype, .trainable)
        backend.copy(copy, at: 0, from: weight)
        parameters.replaceValue(at: 0, with: copy)
        weight = copy
    }

    /// The value at every row of `hidden` (rows, embedding dim).
    public func values(_ hidden: Tensor) -> [Float] {
        let out = backend.zeros([hidden.shape.rows, 1], .f32, .workspace)
        backend.linear(out, hidden, weight, bias: nil)
        return backend.download(out)
    }

    /// Backward of `values`: writes `dHidden` (=, row r is `dValues[r]·w`, zero where
    /// `dValues[r]` is) and accumulates `Σ_r dValues[r]·h_r` into the head's gradient (+=).
    public func backward(dValues: [Float], hidden: Tensor, dHidden: Tensor) {
        precondition(dValues.count == hidden.shape.rows, "one value gradient per row")
        let dy = dValues.withUnsafeBytes { backend.upload($0, [dValues.count, 1], .f32, .workspace) }
        backend.linearBackward(dx: dHidden, dWeight: parameters.gradient(of: weight), dBias: nil, dy: dy, x: hidden,
                               weight: weight)
    }

    /// The file a head is saved in, inside a run's folder.
    public static let fileName = "value_head.safetensors"

    /// Writes the head as `v_head.weight` (1, embedding dim) f32 to `url`.
    public func save(to url: URL) throws {
        let values = backend.download(weight)
        try SafeTensorsWriter.write([(name: "v_head.weight", dtype: .f32, shape: weight.shape,
                                      bytes: try SafeTensorsWriter.bytes(of: values, as: .f32))], to: url)
    }

    /// A head read from a file `save` wrote.
    /// - Throws: `FrugalError.missingFile`, `FrugalError.malformedFile` for a file without
    ///   `v_head.weight`, `FrugalError.shapeMismatch` for a head of another width.
    public static func load(from url: URL, backend: TrainingBackend, width: Int) throws -> ValueHead {
        let file = try SafeTensorsFile(path: url.path)
        guard file.contains("v_head.weight") else {
            throw FrugalError.malformedFile(path: url.path, problem: "no tensor 'v_head.weight'")
        }
        let shape = try file.info("v_head.weight").shape
        guard shape.count == width else { throw FrugalError.shapeMismatch(name: "v_head.weight", expected: [1, width], found: shape) }
        return ValueHead(backend: backend, width: width, values: try file.floats("v_head.weight"))
    }
}
