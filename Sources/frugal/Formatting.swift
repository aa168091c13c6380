// Formatting helpers for the CLI: byte sizes, counts, tables, and errors as one clean line.
import ArgumentParser
import Foundation
import FrugalCore
import FrugalTraining

/// "1.50 GiB", "98.3 MiB", "512 B".
func formatBytes(_ bytes: Int) -> String { ByteCount.describe(bytes) }

/// "134.5M", "7.24B", "512".
func formatCount(_ n: Int) -> String {
    let v = Double(n)
    if v >= 1e9 { return String(format: "%.2fB", v / 1e9) }
    if v >= 1e6 { return String(format: "%.1fM", v / 1e6) }
    if v >= 1e3 { return String(format: "%.1fK", v / 1e3) }
    return "\(n)"
}

/// A plain text table with aligned columns.
struct Table {
    var header: [String]
    var rows: [[String]]

    func render() -> String {
        let all = [header] + rows
        let widths = header.indices.map { c in all.map { $0[c].count }.max() ?? 0 }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { c, cell in
                c == 0 ? cell.padding(toLength: widths[c], withPad: " ", startingAt: 0)
                    : String(repeating: " ", count: widths[c] - cell.count) + cell
            }.joined(separator: "  ")
        }
        let rule = widths.map { String(repeating: "─", count: $0) }.joined(separator: "  ")
        return ([line(header), rule] + rows.map(line)).joined(separator: "\n")
    }
}

/// Runs `body`, turning a `FrugalError` into one line on standard error and exit code 1.
func withCleanErrors<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as FrugalError {
        FileHandle.standardError.write(Data("error: \(error)\n".utf8))
        throw ExitCode.failure
    }
}

/// Writes `message` to standard error as one line and returns the error that exits with code 1.
func failure(_ message: String) -> Error {
    FileHandle.standardError.write(Data("error: \(message)\n".utf8))
    return ExitCode.failure
}

/// "LoRA r=16 α=32.0 on q,k,v" or "full fine-tune".
func describe(_ method: TrainingMethod) -> String {
    switch method {
    case let .lora(l): "LoRA r=\(l.rank) α=\(l.alpha) on \(l.targets.joined(separator: ","))"
    case .full: "full fine-tune"
    }
}

/// "AdamW", "8-bit AdamW" or "SGD".
func describe(_ optimizer: OptimizerKind) -> String {
    switch optimizer {
    case .adamW: "AdamW"
    case .adamW8bit: "8-bit AdamW"
    case .sgd: "SGD"
    }
}

/// The help of `--fused-step`.
let fusedStepHelp = ArgumentHelp(
    "Fuse the optimizer step into backward: update each block as soon as its gradients are complete, so one block's gradients exist at a time (a full fine-tune of an 8B model: 1 GiB instead of 30). Needs --grad-accum 1, --max-grad-norm 0 and no fp16.")

/// The categories of `memory` that peaked above zero, with their peaks: "optimizer 1.0 GiB, gradients 4.0 MiB".
func describePeaks(_ memory: MemorySnapshot) -> String {
    MemoryCategory.allCases.compactMap { category in
        memory.peak[category].flatMap { $0 > 0 ? "\(category.rawValue) \(formatBytes($0))" : nil }
    }.joined(separator: ", ")
}

/// The help of `--offload-optimizer`.
let offloadOptimizerHelp = ArgumentHelp(
    "Keep the optimizer's state and f32 weights in host memory and update on the CPU (ZeRO-Offload): no optimizer memory on the device; each update copies the gradients to the host and the rounded weights back.")

/// The help of `--offload-activations`.
let offloadActivationsHelp = ArgumentHelp(
    "With --checkpointing, keep each block's input in host memory (pinned on the GPU) until backward recomputes the block: the device keeps about one block input instead of one per layer.")

/// The help of `--optimizer`: the choices and the state each keeps.
let optimizerHelp = ArgumentHelp(
    "adamw, adamw8bit or sgd.",
    discussion: """
    adamw keeps two f32 moments per trainable value (8 bytes); adamw8bit keeps them as blockwise \
    8-bit codes, as bitsandbytes' 8-bit AdamW (2 × 260/256 ≈ 2.03 bytes, a quarter); sgd keeps one \
    f32 momentum buffer (4 bytes). f32 masters under fp16 and bf16 add 4 bytes to each.
    """)

/// The help of `--activations`.
let activationsHelp = ArgumentHelp(
    "f32, f16 or bf16: the dtype the blocks store forward activations in (default: the precision's, f32 under fp32, f16 under fp16, bf16 under bf16 and pure-bf16, as torch.autocast).",
    discussion: "16-bit storage halves the activations' memory; gradients and all arithmetic stay f32.")

/// An `--activations` value: nil for the precision's default.
func parseActivations(_ text: String?) throws -> DType? {
    guard let text else { return nil }
    guard let dtype = DType(rawValue: text), [.f32, .f16, .bf16].contains(dtype) else {
        throw ValidationError("--activations must be f32, f16 or bf16, not '\(text)'")
    }
    return dtype
}

/// An `--optimizer` value.
func parseOptimizer(_ text: String) throws -> OptimizerKind {
    guard let kind = OptimizerKind(rawValue: text) else {
        throw ValidationError("unknown optimizer '\(text)' (adamw, adamw8bit, sgd)")
    }
    return kind
}

/// A `--freeze-layers` value: comma-separated block indices (none when nil or empty).
func parseFrozenLayers(_ text: String?) throws -> Set<Int> {
    Set(try (text ?? "").split(separator: ",").map { part in
        guard let block = Int(part.trimmingCharacters(in: .whitespaces)) else {
            throw ValidationError("--freeze-layers: '\(part)' is not a block index")
        }
        return block
    })
}

/// A `--precision` value.
func parsePrecision(_ text: String) throws -> PrecisionPolicy {
    guard let policy = PrecisionPolicy(rawValue: text) else {
        throw ValidationError("unknown precision '\(text)' (fp32, fp16, bf16, pure-bf16)")
    }
    return policy
}
