// HostCopy: a device tensor's bytes parked in host memory (activation offload), until restored.

/// A tensor's bytes moved to host memory by `Backend.offload`, brought back by `Backend.restore`.
///
/// The storage lives on the CPU (pinned on a GPU) and is counted in the backend's `hostLedger`
/// under the category of the tensor it came from. On a GPU its bytes are final only once the
/// device's queued work reaches the copy; nothing but `restore` reads them.
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

    /// The bytes, in `dtype`'s layout.
    public var bytes: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: storage.pointer, count: dtype.byteCount(elements: shape.count)!)
    }
}
