// ProgressLine: one self-updating terminal line with step, loss, tokens/s, memory and ETA.
import ArgumentParser
import Foundation
import FrugalCore
import FrugalTraining

/// Renders training progress on one line of standard error (a new line per step when not a terminal).
struct ProgressLine {
    let total: Int
    let startStep: Int
    private let started = ContinuousClock.now
    private let interactive = isatty(STDERR_FILENO) != 0

    init(total: Int, startStep: Int) {
        self.total = total
        self.startStep = startStep
    }

    mutating func update(_ m: StepMetrics) {
        let elapsed = (ContinuousClock.now - started).inSeconds
        let done = m.step - startStep
        let eta = done > 0 ? elapsed / Double(done) * Double(total - m.step) : 0
        let width = 24, filled = min(width, width * m.step / max(total, 1))
        let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
        let line = String(format: "%@ %d/%d  loss %.4f  lr %.2e  %.0f tok/s  mem %@  ETA %@",
                          bar, m.step, total, m.loss, m.learningRate, m.tokensPerSecond,
                          formatBytes(m.memory.peakTotal), duration(eta))
        write(interactive ? "\r\u{1B}[2K" + line : line + "\n")
    }

    func note(_ text: String) { write((interactive ? "\r\u{1B}[2K" : "") + text + "\n") }

    func finish() { if interactive { write("\n") } }

    private func write(_ text: String) { FileHandle.standardError.write(Data(text.utf8)) }

    private func duration(_ s: Double) -> String {
        let t = Int(s.rounded())
        return t >= 3600 ? String(format: "%dh%02dm", t / 3600, t / 60 % 60) : String(format: "%dm%02ds", t / 60, t % 60)
    }
}

/// Set when the user presses Ctrl-C (SIGINT) or the process gets SIGTERM; the loop checks it
/// between steps, writes a checkpoint and stops.
final class InterruptFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var set = false
    private var sources: [DispatchSourceSignal] = []

    init() {
        for signalNumber in [SIGINT, SIGTERM] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler { [weak self] in
                guard let self else { return }
                self.lock.lock(); self.set = true; self.lock.unlock()
                FileHandle.standardError.write(Data("\n(interrupt: finishing this step and writing a checkpoint)\n".utf8))
            }
            source.resume()
            sources.append(source)
        }
    }

    var isSet: Bool {
        lock.lock(); defer { lock.unlock() }
        return set
    }
}

extension InterruptFlag {
    /// After a step: writes a checkpoint of `trainer` into `directory` when one is due (every
    /// `every` steps; 0: never) or the user interrupted; interrupted, it ends the progress line
    /// and stops the command (exit 130), saying how to resume.
    func checkpointIfDue<T: Checkpointable>(_ trainer: T, step: Int, every: Int, in directory: URL,
                                            progress: inout ProgressLine) throws {
        guard isSet || (every > 0 && step % every == 0) else { return }
        let path = try withCleanErrors { try Checkpoint.save(trainer, in: directory) }
        if isSet {
            progress.finish()
            print("interrupted: checkpoint written to \(path.path); continue with --resume")
            throw ExitCode(130)
        }
    }
}
