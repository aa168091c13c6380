// CUDAOffload: offload on the GPU — a tensor's bytes copied asynchronously into pinned host memory
// and back (activations, an offloaded optimizer's gradients and weights), the pinned buffers kept
// for reuse across steps, the copy stream that moves checkpointed block inputs alongside the
// compute, and events the host waits on for the copies.
import Foundation
import FrugalCore

/// The copy engine's stream: checkpointed block inputs go to the host and come back on it while
/// the compute stream goes on.
///
/// Ordering: each copy first waits for an event recorded on the compute stream when the copy is
/// queued, so it reads what the queued work wrote and writes memory the queued work is done with;
/// the compute stream waits for a tensor brought back only at its `restore`. A tensor offloaded
/// with `dropping` keeps its device memory (`held`) until its copy is done, as the allocator would
/// otherwise hand that memory to later work while the copy still reads it.
final class CopyStream: @unchecked Sendable {
    private let driver: CUDADriver
    private(set) var stream: CUDADriver.Handle?
    private let lock = NSLock()
    /// Dropped device tensors, each until the event after its copy.
    private var held: [(done: CUDADriver.Handle, tensor: Tensor)] = []
    /// Tensors on their way back ahead of `restore`, and the events after their copies.
    let prefetched = PrefetchTable<(tensor: Tensor, done: CUDADriver.Handle)>()

    init(driver: CUDADriver) throws {
        self.driver = driver
        stream = try driver.createStream()
    }

    /// Whether dropped tensors still hold device memory.
    var holdsMemory: Bool { lock.withLock { !held.isEmpty } }

    /// Queues `copy` on this stream after the work queued so far on `compute`, and returns an event
    /// recorded after it.
    func after(_ compute: CUDADriver.Handle, _ copy: (CUDADriver.Handle) throws -> Void) throws -> CUDADriver.Handle {
        let ready = try driver.createEvent()
        // Destroying a recorded event before it passes is allowed: the driver frees it once it has.
        defer { driver.destroyEvent(ready) }
        try driver.record(ready, on: compute)
        try driver.wait(stream, for: ready)
        try copy(stream!)
        let done = try driver.createEvent()
        try driver.record(done, on: stream)
        return done
    }

    /// Makes work queued on `compute` from now on wait for the copies queued here so far: a copy on
    /// the compute stream through a pinned buffer this stream may still be writing or reading.
    func order(before compute: CUDADriver.Handle) throws {
        let tail = try driver.createEvent()
        defer { driver.destroyEvent(tail) }
        try driver.record(tail, on: stream)
        try driver.wait(compute, for: tail)
    }

    /// Holds `tensor`'s memory until `done` has passed.
    func hold(_ tensor: Tensor, until done: CUDADriver.Handle) {
        lock.withLock { held.append((done, tensor)) }
    }

    /// Releases the held tensors whose copies are done; with `waiting`, waits for all of them first.
    func releaseFinished(waiting: Bool = false) throws {
        if waiting { try driver.synchronize(stream) }
        let finished: [(done: CUDADriver.Handle, tensor: Tensor)] = try lock.withLock {
            var finished = [(done: CUDADriver.Handle, tensor: Tensor)]()
            var index = 0
            while index < held.count {
                if try waiting || driver.isDone(held[index].done) { finished.append(held.remove(at: index)) } else { index += 1 }
            }
            return finished
        }
        for entry in finished { driver.destroyEvent(entry.done) }
    }

    /// Waits for the stream, lets go of every tensor it holds and destroys it (before the backend
    /// releases its allocator and context).
    func close() {
        guard let stream else { return }
        try? driver.synchronize(stream)
        try? releaseFinished(waiting: true)
        for entry in prefetched.removeAll() { driver.destroyEvent(entry.done) }
        driver.destroyStream(stream)
        self.stream = nil
    }
}

/// Pinned host buffers, kept by size once released so later offloads skip `cuMemAllocHost`.
///
/// A buffer is reused without waiting: the copies into and out of it are ordered — those on the
/// copy stream among themselves, and each on the compute stream after the copy stream's work
/// queued before it (`CopyStream.order`) — so its next offload runs after its last restore or
/// upload (the host writes into a buffer only after a fence that follows the offload into it).
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
    /// Queues the copy into pinned memory: on the stream, so later work may write the tensor at
    /// once; with `dropping`, on the copy stream alongside later work, the tensor's memory held
    /// until the copy is done.
    public func offload(_ tensor: Tensor, dropping: Bool) -> HostCopy {
        must("offload(\(tensor.shape), \(tensor.dtype))") {
            let bytes = tensor.byteCount, pinned = try pinnedPool.take(bytes), pool = pinnedPool
            if dropping, let copies {
                try copies.releaseFinished()
                let done = try copies.after(stream) { try driver.copyAsync(to: pinned, from: tensor.address, bytes: bytes, stream: $0) }
                copies.hold(tensor, until: done)
            } else {
                try copies?.order(before: stream)
                try driver.copyAsync(to: pinned, from: tensor.address, bytes: bytes, stream: stream)
            }
            let storage = TensorStorage(pointer: pinned, byteCount: bytes, category: tensor.storage.category, device: .cpu,
                                        ledger: hostLedger, release: { pool.give($0, bytes) })
            return HostCopy(storage: storage, shape: tensor.shape, dtype: tensor.dtype)
        }
    }

    /// The tensor `prefetch` brought back, once the stream has waited for its copy; else a new
    /// tensor filled on the stream.
    public func restore(_ copy: HostCopy) -> Tensor {
        must("restore(\(copy.shape), \(copy.dtype))") {
            if let (tensor, done) = copies?.prefetched.take(copy) {
                try driver.wait(stream, for: done)
                driver.destroyEvent(done)
                return tensor
            }
            let tensor = try allocate(copy.shape, copy.dtype, copy.storage.category)
            try copies?.order(before: stream)
            try driver.copyAsync(to: tensor.address, from: copy.storage.pointer, bytes: tensor.byteCount, stream: stream)
            return tensor
        }
    }

    /// Allocates the tensor now and fills it on the copy stream once the work queued so far is
    /// done with its memory (nothing without a copy stream).
    public func prefetch(_ copy: HostCopy) {
        guard let copies else { return }
        must("prefetch(\(copy.shape), \(copy.dtype))") {
            let tensor = try allocate(copy.shape, copy.dtype, copy.storage.category)
            let done = try copies.after(stream) {
                try driver.copyAsync(to: tensor.address, from: copy.storage.pointer, bytes: tensor.byteCount, stream: $0)
            }
            copies.prefetched.store((tensor, done), for: copy)
        }
    }

    /// Queues the copy from the pinned (or any host) buffer into the tensor.
    public func upload(_ copy: HostCopy, into tensor: Tensor) {
        precondition(copy.dtype == tensor.dtype && copy.shape.count == tensor.count && tensor.storage.device == .cuda,
                     "upload: \(copy.shape) \(copy.dtype) into \(tensor.storage.device) \(tensor.shape) \(tensor.dtype)")
        must("upload(\(copy.shape), \(copy.dtype))") {
            try copies?.order(before: stream)
            try driver.copyAsync(to: tensor.address, from: copy.storage.pointer, bytes: tensor.byteCount, stream: stream)
        }
    }

    /// An event recorded on the stream, and one on the copy stream; waiting synchronizes on them alone.
    public func fence() -> DeviceFence {
        must("fence") {
            let driver = driver
            let events = try ([stream] + (copies?.stream.map { [$0] } ?? [])).map { queue in
                let event = try driver.createEvent()
                try driver.record(event, on: queue)
                return event
            }
            return DeviceFence(wait: { [self] in must("waiting for the device") { for event in events { try driver.synchronize(event: event) } } },
                               release: { for event in events { driver.destroyEvent(event) } })
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
