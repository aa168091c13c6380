// MetricsLog: each optimizer step's metrics as a JSON line (metrics.jsonl) and as TensorBoard
// scalars (an event file beside it: `tensorboard --logdir <output>` shows the run live).
import Foundation
import FrugalMeasure
import FrugalTraining

/// Appends each step's metrics to `metrics.jsonl` and to a TensorBoard event file in the same folder.
final class MetricsLog {
    private let handle: FileHandle
    private let encoder: JSONEncoder
    private let tensorBoard: TensorBoardWriter

    /// Opens (or creates) `directory/metrics.jsonl`, truncated unless `append`, and a new event file.
    init(directory: URL, append: Bool) throws {
        let url = directory.appendingPathComponent("metrics.jsonl")
        if !append || !FileManager.default.fileExists(atPath: url.path),
           !FileManager.default.createFile(atPath: url.path, contents: nil) {
            throw failure("\(url.path): cannot create the metrics log")
        }
        handle = try FileHandle(forWritingTo: url)
        if append { try handle.seekToEnd() }
        encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        tensorBoard = try TensorBoardWriter(directory: directory)
    }

    /// One step; `figures` are a phase's own measures (accuracy, reward, KL, …), kept under "figures".
    func append(_ metrics: StepMetrics, figures: [String: Double] = [:]) throws {
        var line = try encoder.encode(metrics)
        if !figures.isEmpty, var object = try JSONSerialization.jsonObject(with: line) as? [String: Any] {
            object["figures"] = figures
            line = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        }
        line.append(UInt8(ascii: "\n"))
        try handle.write(contentsOf: line)
        let scalars: [(tag: String, value: Double)] = [
            ("train/loss", metrics.loss), ("train/learning_rate", Double(metrics.learningRate)),
            ("train/gradient_norm", metrics.gradientNorm), ("train/tokens_per_second", metrics.tokensPerSecond),
            ("memory/peak_mib", Double(metrics.memory.peakTotal) / Double(1 << 20)),
        ] + (metrics.phaseSeconds ?? [:]).sorted { $0.key < $1.key }.map { ("time/\($0.key)_seconds", $0.value) }
          + figures.sorted { $0.key < $1.key }.map { ("phase/\($0.key)", $0.value) }
        try tensorBoard.add(scalars, step: metrics.step)
    }

    deinit { try? handle.close() }
}
