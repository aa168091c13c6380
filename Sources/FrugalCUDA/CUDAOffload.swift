// CUDAOffload: offload on the GPU — a tensor's bytes copied asynchronously into pinned host memory
// and back (activations, an offloaded optimizer's gradients and weights), the pinned buffers kept
// for reuse across steps, and events the host waits on for the copies.
import Foundation
import FrugalCore

/// Pinned host buffers, kept by size once released so later offloads skip `cuMemAllocHost`.
///
/// A buffer is reused without waiting: every copy into or out of it is ordered on the backend's
/// one stream, so its next offload runs after its last restore or upload (the host writes into a
/// buffer only after a fence that follows the offload into it).
final class PinnedPool: @unchecked Sendable {
    private let driver: CUDADriver
    private var free: [Int: [UnsafeMutableRawPointer]] = [:]
    private let lock = NSLock()

    init(driver: CUDADriver) { self.driver = driver }

    deinit {
        for pointer in free.values.joined() { driver.freeHost(pointer) }
    }

    /// A pinned buffer of `bytes` bytes: a released one of that size, or a new one.
    func take(_ bytes: Int) throws -> UnsafeMutableRawPointer {
        lock.lock()
        let reused = free[bytes]?.popLast()
        lock.unlock()
        return try reused ?? driver.allocateHost(max(bytes, 1))
    }

    /// Keeps `pointer` (of `bytes` bytes) for a later `take`.
    func give(_ pointer: UnsafeMutableRawPointer, _ bytes: Int) {
        lock.lock(); defer { lock.unlock() }
        free[bytes, default: []].append(pointer)
    }
}

extension CUDABackend {
    /// Queues the copy into pinned memory on the stream; the device tensor may be released at once
    /// (its memory is reused only by work queued after the copy).
    public func offload(_ tensor: Tensor) -> HostCopy {
        must("offload(\(tensor.shape), \(tensor.dtype))") {
            let bytes = tensor.byteCount, pinned = try pinnedPool.take(bytes), pool = pinnedPool
            try driver.copyAsync(to: pinned, from: tensor.address, bytes: bytes, stream: stream)
            let storage = TensorStorage(pointer: pinned, byteCount: bytes, category: tensor.storage.category, device: .cpu,
                                        ledger: hostLedger, release: { pool.give($0, bytes) })
            return HostCopy(storage: storage, shape: tensor.shape, dtype: tensor.dtype)
        }
    }

    public func restore(_ copy: HostCopy) -> Tensor {
        must("restore(\(copy.shape), \(copy.dtype))") {
            let tensor = try allocate(copy.shape, copy.dtype, copy.storage.category)
            try driver.copyAsync(to: tensor.address, from: copy.storage.pointer, bytes: tensor.byteCount, stream: stream)
            return tensor
        }
    }

    /// Queues the copy from the pinned (or any host) buffer into the tensor.
    public func upload(_ copy: HostCopy, into tensor: Tensor) {
        precondition(copy.dtype == tensor.dtype && copy.shape.count == tensor.count && tensor.storage.device == .cuda,
                     "upload: \(copy.shape) \(copy.dtype) into \(tensor.storage.device) \(tensor.shape) \(tensor.dtype)")
        must("upload(\(copy.shape), \(copy.dtype))") {
            try driver.copyAsync(to: tensor.address, from: copy.storage.pointer, bytes: tensor.byteCount, stream: stream)
        }
    }

    /// An event recorded on the stream; waiting synchronizes on it alone.
    public func fence() -> DeviceFence {
        must("fence") {
            let event = try driver.createEvent(), driver = driver
            try driver.record(event, on: stream)
            return DeviceFence(wait: { [self] in must("waiting for the device") { try driver.synchronize(event: event) } },
                               release: { driver.destroyEvent(event) })
        }
    }

    /// Copies `bytes` bytes between host and device memory (either side may be either), after the
    /// stream's queued work, and waits for it: the host may read or reuse its bytes on return.
    func transfer(to destination: UnsafeMutableRawPointer, on destinationDevice: DeviceKind, from source: UnsafeMutableRawPointer,
                  on sourceDevice: DeviceKind, bytes: Int) throws {
        switch (destinationDevice, sourceDevice) {
        case (.cpu, .cpu):
            try driver.synchronize(stream)
            destination.copyMemory(from: source, byteCount: bytes)
        case (.cpu, .cuda):
            try driver.copyAsync(to: destination, from: DevicePointer(UInt(bitPattern: source)), bytes: bytes, stream: stream)
            try driver.synchronize(stream)
        case (.cuda, .cpu):
            try driver.copyAsync(to: DevicePointer(UInt(bitPattern: destination)), from: source, bytes: bytes, stream: stream)
            try driver.synchronize(stream)
        case (.cuda, .cuda):
            try driver.copyAsync(to: DevicePointer(UInt(bitPattern: destination)), from: DevicePointer(UInt(bitPattern: source)),
                                 bytes: bytes, stream: stream)
        }
    }
}
