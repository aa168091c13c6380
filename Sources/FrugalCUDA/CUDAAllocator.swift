// CUDAAllocator: a caching allocator of device memory, so a training step allocates once per
// run, not per step; and a ring of pinned host slots for the small arrays ops upload.
import Foundation
import FrugalCore

/// Device memory handed out in rounded sizes and kept for reuse when released.
///
/// Sizes round up to 512 bytes below 1 MiB and to 2 MiB above; a released block goes back to
/// the free list of its size and is handed out again before `cuMemAlloc` is called. All work
/// runs on one stream, so a block released while a kernel still reads it is only reused by work
/// queued after that kernel. The backend's `MemoryLedger` counts what tensors hold, by category;
/// `reservedBytes` is what the allocator holds from the driver (held + cached).
final class CUDAAllocator: @unchecked Sendable {
    private let driver: CUDADriver
    private let lock = NSLock()
    private var cached: [Int: [DevicePointer]] = [:]
    private(set) var reservedBytes = 0
    private(set) var peakReservedBytes = 0
    private(set) var cachedBytes = 0

    init(driver: CUDADriver) { self.driver = driver }

    /// The size a request of `bytes` is rounded to.
    static func roundedSize(_ bytes: Int) -> Int {
        let size = max(bytes, 1)
        let unit = size < 1 << 20 ? 512 : 2 << 20
        return (size + unit - 1) / unit * unit
    }

    /// A block of at least `bytes` bytes (its rounded size is returned).
    /// - Throws: `CUDAError.outOfMemory` (after returning the cached blocks to the driver) with
    ///   the request, its category and the device's free and total memory.
    func allocate(_ bytes: Int, category: MemoryCategory) throws -> (pointer: DevicePointer, size: Int) {
        let size = Self.roundedSize(bytes)
        lock.lock(); defer { lock.unlock() }
        if var blocks = cached[size], let block = blocks.popLast() {
            cached[size] = blocks
            cachedBytes -= size
            return (block, size)
        }
        var (pointer, code) = driver.allocate(size)
        if code == CUDADriver.outOfMemoryCode {
            try releaseCachedLocked()
            (pointer, code) = driver.allocate(size)
        }
        if code == CUDADriver.outOfMemoryCode {
            let info = (try? driver.memoryInfo()) ?? (free: 0, total: 0)
            throw CUDAError.outOfMemory(requested: size, category: category.rawValue, free: info.free, total: info.total)
        }
        try driver.check(code, "cuMemAlloc(\(size) bytes)")
        reservedBytes += size
        peakReservedBytes = max(peakReservedBytes, reservedBytes)
        return (pointer, size)
    }

    /// Returns a block to the cache.
    func release(_ pointer: DevicePointer, size: Int) {
        lock.lock(); defer { lock.unlock() }
        cached[size, default: []].append(pointer)
        cachedBytes += size
    }

    /// Frees every cached block (`cuMemFree` waits for the device).
    func releaseCached() throws {
        lock.lock(); defer { lock.unlock() }
        try releaseCachedLocked()
    }

    private func releaseCachedLocked() throws {
        for (size, blocks) in cached {
            for block in blocks {
                try driver.free(block)
                reservedBytes -= size
            }
        }
        cached.removeAll()
        cachedBytes = 0
    }
}

/// Pinned host slots through which ops upload their small host arrays (token ids, positions,
/// segment ids, targets) without a host synchronisation: each slot's copy is fenced by an event,
/// and a slot is reused only once its previous copy has finished.
final class HostStaging: @unchecked Sendable {
    static let slotBytes = 256 << 10
    static let slotCount = 16
    private let driver: CUDADriver
    private let base: UnsafeMutableRawPointer
    private var events: [CUDADriver.Handle] = []
    private var used = [Bool](repeating: false, count: HostStaging.slotCount)
    private var next = 0
    private let lock = NSLock()

    init(driver: CUDADriver) throws {
        self.driver = driver
        base = try driver.allocateHost(Self.slotBytes * Self.slotCount)
        for _ in 0..<Self.slotCount { events.append(try driver.createEvent()) }
    }

    deinit {
        for event in events { driver.destroyEvent(event) }
        driver.freeHost(base)
    }

    /// Copies `bytes` to `destination` on `stream`: through a pinned slot when they fit,
    /// else with a synchronous copy after the stream's work.
    func copy(_ bytes: UnsafeRawBufferPointer, to destination: DevicePointer, stream: CUDADriver.Handle) throws {
        guard let source = bytes.baseAddress, bytes.count > 0 else { return }
        if bytes.count > Self.slotBytes {
            try driver.synchronize(stream)
            try driver.copy(to: destination, from: source, bytes: bytes.count)
            return
        }
        lock.lock(); defer { lock.unlock() }
        let slot = next
        next = (next + 1) % Self.slotCount
        if used[slot] { try driver.synchronize(event: events[slot]) }
        let pinned = base + slot * Self.slotBytes
        pinned.copyMemory(from: source, byteCount: bytes.count)
        try driver.copyAsync(to: destination, from: UnsafeRawPointer(pinned), bytes: bytes.count, stream: stream)
        try driver.record(events[slot], on: stream)
        used[slot] = true
    }
}
