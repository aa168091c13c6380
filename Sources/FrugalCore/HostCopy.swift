// HostCopy: a device tensor's bytes parked in host memory (activation offload, an offloaded
// optimizer's gradients), until restored; and the table of copies on their way back.
import Foundation

/// A tensor's bytes moved to host memory by `Backend.offload`, brought back by `Backend.restore`.
///
/// The storage lives on the CPU (pinned on a GPU) and is counted in the backend's `hostLedger`
/// under the category of the tensor it came from. On a GPU its bytes are final only once the
/// device's queued work reaches the copy: the host reads them (`tensor`) once a `Backend.fence`
/// queued after the offload has passed.
public struct HostCopy: @unchecked Sendable {
    /// The host buffer.
    public let storage: TensorStorage
    public let shape: Shape
    public let dtype: DType

    public init(storage: TensorStorage, shape: Shape, dtype: DType) {
        precondition(storage.device == .cpu, "a host copy in \(storage.device) memory")
        self.storage = storage
        self.shape = shape
        self.dtype = dtype
    }

    /// The bytes as a host tensor.
    public var tensor: Tensor { Tensor(storage: storage, shape: shape, dtype: dtype) }

    /// The same buffer carrying `dtype` values of the same shape, in its first bytes (a weight's
    /// 16-bit values written over its f32 gradient).
    public func viewed(as dtype: DType) -> HostCopy {
        precondition(dtype.byteCount(elements: shape.count)! <= storage.byteCount,
                     "a host copy of \(storage.byteCount) bytes viewed as \(shape) \(dtype)")
        return HostCopy(storage: storage, shape: shape, dtype: dtype)
    }

    /// The bytes, in `dtype`'s layout.
    public var bytes: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: storage.pointer, count: dtype.byteCount(elements: shape.count)!)
    }
}

/// Tensors a backend started bringing back from host copies (`Backend.prefetch`), each until
/// `restore` takes it. Keyed by the copy's storage, which the table keeps alive meanwhile so that
/// a new copy cannot take its place.
public final class PrefetchTable<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [ObjectIdentifier: (storage: TensorStorage, value: Value)] = [:]

    public init() {}

    /// Keeps `value` for `copy`.
    public func store(_ value: Value, for copy: HostCopy) {
        lock.withLock { entries[ObjectIdentifier(copy.storage)] = (copy.storage, value) }
    }

    /// What was stored for `copy`, removed; nil when nothing was.
    public func take(_ copy: HostCopy) -> Value? {
        lock.withLock { entries.removeValue(forKey: ObjectIdentifier(copy.storage))?.value }
    }

    /// Every value stored and not taken, removed.
    public func removeAll() -> [Value] {
        lock.withLock {
            defer { entries = [:] }
            return entries.values.map(\.value)
        }
    }
}
