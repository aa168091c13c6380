// MetricsLog: step metrics as JSON lines, one per optimizer step, for plots and TensorBoard-like tools.
import Foundation
import FrugalTraining

/// Appends each step's metrics as one JSON line to a file.
final class MetricsLog {
    private let handle: FileHandle
    private let encoder: JSONEncoder

    /// Opens (or creates) `url`; truncates it unless `append`.
    init(_ url: URL, append: Bool) throws {
        if !append || !FileManager.default.fileExists(atPath: url.path) {
            FileManager.default.createFile(atPath: url.path, contents: nil)
        }
        handle = try FileHandle(forWritingTo: url)
        if append { try handle.seekToEnd() }
        encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
    }

    func append(_ metrics: StepMetrics) throws {
        var line = try encoder.encode(metrics)
        line.append(UInt8(ascii: "\n"))
        try handle.write(contentsOf: line)
    }

    deinit { try? handle.close() }
}
