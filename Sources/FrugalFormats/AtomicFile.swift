// AtomicFile: files that appear complete or not at all (temporary name, fsync, rename).
import Foundation
import FrugalCore

/// A file written under a temporary name in its final folder, flushed, then renamed into place.
public struct AtomicFile {
    private let fd: Int32
    private let path: String

    /// Runs `body` to fill a temporary file, then renames it to `url`; removes it on failure.
    public static func write(to url: URL, _ body: (AtomicFile) throws -> Void) throws {
        let folder = url.deletingLastPathComponent().path
        let temporary = url.deletingLastPathComponent()
            .appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw failure(url.path, "cannot create a temporary file in \(folder)") }
        do {
            try body(AtomicFile(fd: fd, path: url.path))
            guard fsync(fd) == 0 else { throw failure(url.path, "cannot flush") }
            guard close(fd) == 0 else { throw failure(url.path, "cannot close") }
        } catch {
            close(fd)
            unlink(temporary)
            throw error
        }
        guard rename(temporary, url.path) == 0 else {
            let error = failure(url.path, "cannot rename the temporary file into place")
            unlink(temporary)
            throw error
        }
        try syncDirectory(URL(fileURLWithPath: folder))
    }

    /// Writes `data` to `url` atomically.
    public static func write(_ data: Data, to url: URL) throws {
        try write(to: url) { file in try data.withUnsafeBytes { try file.append($0) } }
    }

    /// Flushes a folder's entries (new names, renames) to disk.
    public static func syncDirectory(_ url: URL) throws {
        let fd = open(url.path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw failure(url.path, "cannot open folder") }
        fsync(fd)
        close(fd)
    }

    /// Writes all of `bytes` at the end of the file.
    public func append(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let n = systemWrite(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw Self.failure(path, "cannot write")
            }
            done += n
        }
    }

    private static func failure(_ path: String, _ what: String) -> FrugalError {
        .invalidArgument("\(path): \(what): \(String(cString: strerror(errno)))")
    }
}
/// POSIX `write`, named apart from the writer's own `write`.
private func systemWrite(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int {
    #if canImport(Glibc)
    Glibc.write(fd, buffer, count)
    #else
    Darwin.write(fd, buffer, count)
    #endif
}
