// PageCache: large host buffers mapped from the kernel once and reused, so that a training
// step does not hand gigabytes of activations back to the kernel and fault them in again.
import Foundation

/// Page-aligned buffers from `mmap`, kept after release for the next allocation of the same
/// length.
///
/// A step allocates and frees the same activation sizes every time; fresh pages cost a fault
/// and a kernel clear each (1.6 GB/s with 4 KiB pages on the 2-core machine, against ~40 GB/s
/// for a memset of memory already mapped). Freed buffers wait here, most recent first. The
/// cache never grows the process beyond its live memory by more than `slackBytes`: before a
/// new mapping, the oldest cached buffers are unmapped to make room.
final class PageCache: @unchecked Sendable {
    /// Cached bytes allowed beyond what is live before a new mapping evicts old buffers.
    let slackBytes: Int
    private let lock = NSLock()
    /// Freed buffers, oldest first.
    private var entries: [(pointer: UnsafeMutableRawPointer, length: Int)] = []
    private var cachedBytes = 0

    /// Bytes of a huge page; buffers at least this long start on a huge-page boundary and ask
    /// for transparent huge pages.
    static let hugePageBytes = 2 << 20
    static let pageBytes = Int(sysconf(Int32(_SC_PAGESIZE)))

    init(slackBytes: Int) {
        self.slackBytes = slackBytes
    }

    deinit { for entry in entries { munmap(entry.pointer, entry.length) } }

    /// The mapped length that holds `size` bytes.
    static func length(for size: Int) -> Int { (size + pageBytes - 1) / pageBytes * pageBytes }

    /// A buffer of `length` bytes (a multiple of the page size) and whether it is known to be
    /// zero-filled (a fresh mapping), or nil when the kernel refuses.
    func take(_ length: Int) -> (pointer: UnsafeMutableRawPointer, zeroed: Bool)? {
        lock.lock()
        if let index = entries.lastIndex(where: { $0.length == length }) {
            let pointer = entries.remove(at: index).pointer
            cachedBytes -= length
            lock.unlock()
            return (pointer, false)
        }
        // Make room: keep at most slackBytes cached once this mapping is live.
        var evicted: [(UnsafeMutableRawPointer, Int)] = []
        while !entries.isEmpty && cachedBytes + length > slackBytes {
            let oldest = entries.removeFirst()
            cachedBytes -= oldest.length
            evicted.append((oldest.pointer, oldest.length))
        }
        lock.unlock()
        for (pointer, length) in evicted { munmap(pointer, length) }
        return Self.map(length).map { ($0, true) }
    }

    /// Takes back a buffer from `take`.
    func give(_ pointer: UnsafeMutableRawPointer, _ length: Int) {
        lock.lock()
        entries.append((pointer, length))
        cachedBytes += length
        lock.unlock()
    }

    /// Unmaps every cached buffer.
    func trim() {
        lock.lock()
        let all = entries
        entries = []
        cachedBytes = 0
        lock.unlock()
        for entry in all { munmap(entry.pointer, entry.length) }
    }

    /// Zero-filled pages for `length` bytes; from 2 MiB on they start on a huge-page boundary
    /// and ask for transparent huge pages.
    private static func map(_ length: Int) -> UnsafeMutableRawPointer? {
        let huge = length >= hugePageBytes
        let reserve = huge ? length + hugePageBytes : length
        guard let raw = mmap(nil, reserve, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              raw != UnsafeMutableRawPointer(bitPattern: -1) else { return nil }
        guard huge else { return raw }
        // Keep the huge-page-aligned part; hand back the head and tail of the reservation.
        let address = UInt(bitPattern: raw)
        let head = Int((UInt(hugePageBytes) - address % UInt(hugePageBytes)) % UInt(hugePageBytes))
        if head > 0 { munmap(raw, head) }
        let tail = reserve - head - length
        if tail > 0 { munmap(raw + head + length, tail) }
        let pointer = raw + head
        _ = madvise(pointer, length, 14)  // MADV_HUGEPAGE; a kernel without THP ignores it
        return pointer
    }
}
