// `frugal info`: what a model is — architecture, shape, parameters, dtypes, memory.
import ArgumentParser
import FrugalCore
import FrugalCPU
import FrugalModels

extension Frugal {
    struct Info: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a model's architecture, parameter count, dtypes and the memory its weights take.",
            discussion: "Loads the weights on the CPU backend and reports the bytes it allocated, by memory category.")

        @OptionGroup var model: ModelOptions

        func run() throws {
            let files = try withCleanErrors { try ModelFiles(path: model.path) }
            let c = files.configuration
            let stored = try files.storedTensors()
            var parameters = 0
            var byDType: [DType: (tensors: Int, parameters: Int, bytes: Int)] = [:]
            for t in stored {
                let count = t.shape.count
                parameters += count
                let bytes = t.dtype.byteCount(elements: count) ?? 0
                byDType[t.dtype, default: (0, 0, 0)].tensors += 1
                byDType[t.dtype, default: (0, 0, 0)].parameters += count
                byDType[t.dtype, default: (0, 0, 0)].bytes += bytes
            }
            print("model        \(files.path)")
            print("architecture \(c.modelType) (decoder family \(c.architecture.rawValue))")
            print("shape        \(c.layers) layers, hidden \(c.hiddenSize), MLP \(c.intermediateSize), heads \(c.heads)/\(c.kvHeads) kv × \(c.headDim), vocab \(c.vocabSize)")
            print("positions    \(c.usesRotaryPositions ? "rotary θ=\(c.ropeTheta)" : "learned"), context \(c.maxPositions), \(c.tiedEmbeddings ? "tied" : "separate") output head")
            print("parameters   \(formatCount(parameters)) in \(stored.count) tensors")
            print("")
            print(Table(header: ["dtype", "tensors", "parameters", "bytes"],
                        rows: byDType.sorted { $0.value.bytes > $1.value.bytes }.map {
                            [$0.key.rawValue, "\($0.value.tensors)", formatCount($0.value.parameters), formatBytes($0.value.bytes)]
                        }).render())
            let backend = CPUBackend()
            let decoder = try model.decoder(files, on: backend)
            let snapshot = backend.ledger.snapshot
            print("")
            print("memory on the CPU backend after loading (measured by category):")
            print(Table(header: ["category", "current", "peak"], rows: MemoryCategory.allCases.map {
                [$0.rawValue, formatBytes(snapshot.current[$0, default: 0]), formatBytes(snapshot.peak[$0, default: 0])]
            }).render())
            _ = decoder
        }
    }
}
