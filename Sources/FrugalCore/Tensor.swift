// Tensor and TensorStorage: a tagged buffer plus shape and dtype.

/// Where a tensor's bytes live.
public enum DeviceKind: String, Sendable, Codable {
    case cpu, cuda
}

/// A block of memory owned by a backend, tagged with its memory category.
///
/// The ledger is told on allocation and again when the storage is released, so a backend's
/// peak by category is measured, not estimated.
public final class TensorStorage: @unchecked Sendable {
    /// Base address (host or device).
    public let pointer: UnsafeMutableRawPointer
    /// Size in bytes.
    public let byteCount: Int
    /// What this memory holds.
    public let category: MemoryCategory
    /// The device the address belongs to.
    public let device: DeviceKind
    private let release: (UnsafeMutableRawPointer) -> Void
    private let ledger: MemoryLedger

    /// Wraps memory that `release` frees; records it in `ledger`.
    public init(pointer: UnsafeMutableRawPointer, byteCount: Int, category: MemoryCategory,
                device: DeviceKind, ledger: MemoryLedger,
                release: @escaping (UnsafeMutableRawPointer) -> Void) {
        self.pointer = pointer
        self.byteCount = byteCount
        self.category = category
        self.device = device
        self.ledger = ledger
        self.release = release
        ledger.allocated(byteCount, category)
    }

    deinit {
        ledger.freed(byteCount, category)
        release(pointer)
    }
}

/// A view of a storage: dtype, shape and byte offset. Row-major and contiguous.
public struct Tensor: @unchecked Sendable {
    public let storage: TensorStorage
    public let byteOffset: Int
    public let shape: Shape
    public let dtype: DType

    public init(storage: TensorStorage, byteOffset: Int = 0, shape: Shape, dtype: DType) {
        precondition(byteOffset + (dtype.byteCount(elements: shape.count) ?? .max) <= storage.byteCount,
                     "tensor view \(shape) \(dtype) past the end of its storage")
        self.storage = storage
        self.byteOffset = byteOffset
        self.shape = shape
        self.dtype = dtype
    }

    /// Number of elements.
    public var count: Int { shape.count }
    /// Number of bytes of this view.
    public var byteCount: Int { dtype.byteCount(elements: shape.count)! }
    /// Address of the first byte.
    public var rawPointer: UnsafeMutableRawPointer { storage.pointer + byteOffset }

    /// The same bytes with another shape of equal element count.
    public func reshaped(_ newShape: Shape) -> Tensor {
        precondition(newShape.count == shape.count, "reshape \(shape) -> \(newShape) changes the element count")
        return Tensor(storage: storage, byteOffset: byteOffset, shape: newShape, dtype: dtype)
    }

    /// Rows `range` of the tensor viewed as a matrix of `shape.rows` rows.
    public func rows(_ range: Range<Int>) -> Tensor {
        let rowElements = shape.last
        let rowBytes = dtype.byteCount(elements: rowElements)!
        var dims = shape.dims
        if dims.isEmpty { dims = [1] }
        let outer = Shape([range.count] + [rowElements])
        _ = dims
        return Tensor(storage: storage, byteOffset: byteOffset + range.lowerBound * rowBytes, shape: outer, dtype: dtype)
    }

    /// Typed access to f32 host memory.
    public var floats: UnsafeMutableBufferPointer<Float> {
        precondition(dtype == .f32 && storage.device == .cpu, "floats of a \(dtype) \(storage.device) tensor")
        return UnsafeMutableBufferPointer(start: rawPointer.assumingMemoryBound(to: Float.self), count: count)
    }
}
