// Shared by every fuzz target: the readers take a path, so each input is written to a file in a
// temporary folder of this process's own (under /dev/shm when there is one, to stay in memory).
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// This process's temporary folder, made on first use.
nonisolated(unsafe) private var folder: String?

/// Writes `size` bytes at `data` to `name` in this process's temporary folder and returns its path.
func writeInput(_ data: UnsafePointer<UInt8>, _ size: Int, name: String) -> String {
    if folder == nil {
        let base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : (getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp")
        var template = Array("\(base)/frugal-fuzz-XXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else { fatalError("cannot make a temporary folder in \(base)") }
        folder = String(cString: template)
        atexit { removeFolder() }
    }
    let path = "\(folder!)/\(name)"
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    guard fd >= 0 else { fatalError("cannot create \(path)") }
    var written = 0
    while written < size {
        let n = write(fd, data + written, size - written)
        guard n > 0 else { fatalError("cannot write \(path)") }
        written += n
    }
    close(fd)
    return path
}

/// Removes this process's temporary folder and the input files in it.
private func removeFolder() {
    guard let folder, let dir = opendir(folder) else { return }
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != "." && name != ".." { unlink("\(folder)/\(name)") }
    }
    closedir(dir)
    rmdir(folder)
}
