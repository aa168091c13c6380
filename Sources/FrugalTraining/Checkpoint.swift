// Checkpoint: a run's complete state in a folder, written atomically, verified on load.
import Foundation
import FrugalCore
import FrugalFormats
import FrugalModels

/// A trainer whose complete state `Checkpoint` saves and restores: `Trainer` (SFT) and the
/// reward, DPO and PPO trainers.
public protocol Checkpointable: AnyObject {
    /// The scalar state beside the tensors: step, random streams, data position, loss scale,
    /// configuration.
    associatedtype CheckpointState: Codable
    /// The phase its checkpoints are of ("sft", "reward", "dpo", "ppo"); another phase's are refused.
    static var checkpointPhase: String { get }
    /// Optimizer steps attempted so far; it names the checkpoint.
    var step: Int { get }
    /// The backend holding the state tensors.
    var backend: TrainingBackend { get }
    /// Every state tensor under a name no other shares: trainable values, f32 masters, moments.
    var checkpointTensors: [(String, Tensor)] { get }
    /// The scalar state now.
    var checkpointState: CheckpointState { get }
    /// Sets the scalar state; `Checkpoint.restore` calls it once the files are checked, then
    /// copies the tensors.
    /// - Throws: when the state does not fit the trainer (other data), before changing anything.
    func restore(_ state: CheckpointState) throws
}

/// The fields of `state.json` every checkpoint has, beside its trainer's own.
struct CheckpointHeader: Codable {
    var formatVersion: Int
    /// Absent in checkpoints written before the phases had any: those are SFT's.
    var phase: String?
}

/// `state.json`: a trainer's scalar state with the header's fields in the same object.
struct CheckpointStateFile<State: Encodable>: Encodable {
    let header: CheckpointHeader
    let state: State

    func encode(to encoder: any Encoder) throws {
        try state.encode(to: encoder)
        try header.encode(to: encoder)
    }
}

/// The list of a checkpoint's files with their sizes and hashes.
struct CheckpointManifest: Codable {
    struct Entry: Codable, Equatable {
        var bytes: Int
        /// FNV-1a 64 of the file's bytes, in hex.
        var fnv1a64: String
    }
    var formatVersion: Int
    var step: Int
    var files: [String: Entry]
}

/// Saves and restores a `Checkpointable` trainer: trainable weights (as computed with, and f32
/// masters), optimizer moments (f32, or 8-bit AdamW's packed blocks byte for byte), and the
/// scalar state (step, random streams, data position, loss scale, configuration).
///
/// A checkpoint is a folder `step-NNNNNN` with `tensors.safetensors`, `state.json` and
/// `manifest.json`. It is written in a temporary folder, flushed, then renamed into place, and
/// `latest` (a one-line file, itself replaced atomically) names it last: a crash at any moment
/// leaves the previous checkpoint and `latest` intact.
public enum Checkpoint {
    static let formatVersion = 1

    /// Writes the trainer's state under `directory` and points `latest` at it.
    /// - Returns: the checkpoint folder.
    @discardableResult
    public static func save<T: Checkpointable>(_ trainer: T, in directory: URL) throws -> URL {
        let fm = FileManager.default
        try fm.createDirectory(at: directory, withIntermediateDirectories: true)
        let name = String(format: "step-%06d", trainer.step)
        let final = directory.appendingPathComponent(name)
        let temporary = directory.appendingPathComponent(".tmp-\(name)-\(ProcessInfo.processInfo.processIdentifier)")
        removeAbandonedTemporaries(in: directory)
        try? fm.removeItem(at: temporary)
        try fm.createDirectory(at: temporary, withIntermediateDirectories: true)

        // Float tensors as themselves; packed ones (8-bit moments) as U8 buffers, their dtype in the metadata.
        let tensors = trainer.checkpointTensors
        let packed = tensors.filter { $0.1.dtype.isQuantized }, floats = tensors.filter { !$0.1.dtype.isQuantized }
        var metadata = ["format": "frugal-checkpoint"]
        for (name, t) in packed { metadata[dtypeKey(name)] = t.dtype.rawValue }
        try SafeTensorsWriter.write(floats.map { (name: $0, dtype: $1.dtype, shape: $1.shape,
                                                  bytes: trainer.backend.downloadBytes($1)) },
                                    buffers: packed.map { (name: $0, bytes: trainer.backend.downloadBytes($1)) },
                                    metadata: metadata, to: temporary.appendingPathComponent("tensors.safetensors"))
        let state = CheckpointStateFile(header: CheckpointHeader(formatVersion: formatVersion, phase: T.checkpointPhase),
                                        state: trainer.checkpointState)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(encoder.encode(state), to: temporary.appendingPathComponent("state.json"))
        var files = [String: CheckpointManifest.Entry]()
        for file in ["tensors.safetensors", "state.json"] {
            files[file] = try entry(temporary.appendingPathComponent(file))
        }
        let manifest = CheckpointManifest(formatVersion: formatVersion, step: trainer.step, files: files)
        try AtomicFile.write(encoder.encode(manifest), to: temporary.appendingPathComponent("manifest.json"))
        try AtomicFile.syncDirectory(temporary)

        if fm.fileExists(atPath: final.path) {
            // Saving a step again: move the old folder aside first, so `latest` never names a
            // folder that is missing for longer than one rename.
            let previous = directory.appendingPathComponent(".old-\(name)-\(ProcessInfo.processInfo.processIdentifier)")
            try fm.moveItem(at: final, to: previous)
            try fm.moveItem(at: temporary, to: final)
            try fm.removeItem(at: previous)
        } else {
            try fm.moveItem(at: temporary, to: final)
        }
        try AtomicFile.syncDirectory(directory)
        try AtomicFile.write(Data((name + "\n").utf8), to: directory.appendingPathComponent("latest"))
        return final
    }

    /// Removes the `.tmp-<name>-<pid>` folders of saves whose process is gone (killed mid-save).
    private static func removeAbandonedTemporaries(in directory: URL) {
        let fm = FileManager.default
        for entry in (try? fm.contentsOfDirectory(atPath: directory.path)) ?? [] where entry.hasPrefix(".tmp-step-") {
            guard let pid = entry.split(separator: "-").last.flatMap({ Int32($0) }) else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH { try? fm.removeItem(at: directory.appendingPathComponent(entry)) }
        }
    }

    /// The folder `latest` names under `directory`, or nil when there is none.
    public static func latest(in directory: URL) -> URL? {
        guard let text = try? String(contentsOf: directory.appendingPathComponent("latest"), encoding: .utf8) else { return nil }
        let name = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard name.hasPrefix("step-"), !name.contains("/") else { return nil }
        return directory.appendingPathComponent(name)
    }

    /// Restores `trainer` from a checkpoint folder, after checking every file against the manifest.
    /// - Throws: `FrugalError.malformedFile` naming the file that is missing, altered, or does
    ///   not fit the trainer (another phase, other tensors, other shapes);
    ///   `FrugalError.invalidArgument` when the data position does not fit the trainer's data.
    ///   Either way the trainer is unchanged.
    public static func restore<T: Checkpointable>(_ trainer: T, from folder: URL) throws {
        let manifestURL = folder.appendingPathComponent("manifest.json")
        guard let manifestData = try? Data(contentsOf: manifestURL) else {
            throw FrugalError.malformedFile(path: manifestURL.path, problem: "missing checkpoint manifest")
        }
        let manifest: CheckpointManifest
        do { manifest = try JSONDecoder().decode(CheckpointManifest.self, from: manifestData) } catch {
            throw FrugalError.malformedFile(path: manifestURL.path, problem: "unreadable manifest: \(error)")
        }
        for (file, expected) in manifest.files.sorted(by: { $0.key < $1.key }) {
            let url = folder.appendingPathComponent(file)
            guard FileManager.default.fileExists(atPath: url.path) else {
                throw FrugalError.malformedFile(path: url.path, problem: "missing from checkpoint")
            }
            guard try entry(url) == expected else {
                throw FrugalError.malformedFile(path: url.path, problem: "does not match the checkpoint manifest (altered or incomplete)")
            }
        }
        let stateURL = folder.appendingPathComponent("state.json")
        func decode<S: Decodable>(_ type: S.Type) throws -> S {
            do { return try JSONDecoder().decode(type, from: Data(contentsOf: stateURL)) } catch {
                throw FrugalError.malformedFile(path: stateURL.path, problem: "unreadable trainer state: \(error)")
            }
        }
        let header = try decode(CheckpointHeader.self), phase = header.phase ?? "sft"
        guard header.formatVersion == formatVersion else {
            throw FrugalError.malformedFile(path: stateURL.path, problem: "checkpoint format \(header.formatVersion); this build reads format \(formatVersion)")
        }
        guard phase == T.checkpointPhase else {
            throw FrugalError.malformedFile(path: stateURL.path, problem: "a checkpoint of the \(phase) phase, not of \(T.checkpointPhase)")
        }
        let state = try decode(T.CheckpointState.self)
        let tensorsURL = folder.appendingPathComponent("tensors.safetensors")
        let file = try SafeTensorsFile(url: tensorsURL)
        // Check everything before changing anything, so a bad checkpoint leaves the trainer as it was.
        var restored = [(Tensor, UnsafeRawBufferPointer)]()
        for (name, tensor) in trainer.checkpointTensors {
            guard file.contains(name) else {
                throw FrugalError.malformedFile(path: tensorsURL.path, problem: "no tensor '\(name)' (a checkpoint of another run?)")
            }
            if tensor.dtype.isQuantized {
                let bytes = try file.rawBytes(name), dtype = file.metadata[dtypeKey(name)] ?? "none"
                guard dtype == tensor.dtype.rawValue, bytes.count == tensor.byteCount else {
                    throw FrugalError.malformedFile(path: tensorsURL.path, problem: "tensor '\(name)' is \(bytes.count) bytes of \(dtype), expected \(tensor.byteCount) of \(tensor.dtype.rawValue)")
                }
                restored.append((tensor, bytes))
            } else {
                let info = try file.info(name)
                guard info.shape == tensor.shape, info.dtype == tensor.dtype else {
                    throw FrugalError.malformedFile(path: tensorsURL.path, problem: "tensor '\(name)' is \(info.shape) \(info.dtype.rawValue), expected \(tensor.shape) \(tensor.dtype.rawValue)")
                }
                restored.append((tensor, try file.data(name)))
            }
        }
        try trainer.restore(state)
        for (tensor, bytes) in restored {
            trainer.backend.copy(tensor, at: 0, from: trainer.backend.upload(bytes, tensor.shape, tensor.dtype, .workspace))
        }
    }

    /// The metadata key naming the dtype of packed state tensor `name`.
    private static func dtypeKey(_ name: String) -> String { "dtype:" + name }

    private static func entry(_ url: URL) throws -> CheckpointManifest.Entry {
        let data = try Data(contentsOf: url)
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in data { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        return CheckpointManifest.Entry(bytes: data.count, fnv1a64: String(hash, radix: 16))
    }
}
