// `frugal bench cpu`: GEMM throughput against raw BLAS, and prefill/decode tokens/s of a real model.
import ArgumentParser
import Foundation
import FrugalCore
import FrugalCPU
import FrugalEval
import FrugalModels

extension Frugal {
    struct Bench: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Measure the CPU backend: GEMM against raw OpenBLAS, and a real model's prefill and decode speed.",
            discussion: """
            GEMM shapes are those of the model's projections at `--tokens` rows, with f32 weights
            (Frugal's linear vs cblas_sgemm on the same buffers) and with the model's own packed
            weights (widened tile by tile inside the linear op). Writes a JSON result when --output is given.
            """)

        @OptionGroup var model: ModelOptions
        @Option(help: "Rows of the GEMMs and prompt length for prefill.") var tokens = 256
        @Option(help: "Tokens to decode.") var decode = 64
        @Option(help: "Timed repetitions of each GEMM.") var repeats = 5
        @Option(help: "Write the result JSON here (bench/results/DATE-cpu2-foundation.json).") var output: String?

        func run() throws {
            let files = try withCleanErrors { try ModelFiles(path: model.path) }
            let backend = CPUBackend()
            let decoder = try withCleanErrors { try files.decoder(on: backend) }
            let c = files.configuration
            print("BLAS: \(backend.blas.libraryPath ?? "none (Swift fallback GEMM)"), \(ProcessInfo.processInfo.activeProcessorCount) cores")
            var rows: [[String: Any]] = []
            let shapes = [("q/o proj", c.hiddenSize, c.heads * c.headDim), ("k/v proj", c.hiddenSize, c.kvHeads * c.headDim),
                          ("gate/up", c.hiddenSize, c.intermediateSize), ("down", c.intermediateSize, c.hiddenSize),
                          ("lm head", c.hiddenSize, c.vocabSize)]
            var table = [[String]]()
            let block = decoder.weights.blocks[0]
            let packed = ["q/o proj": block.query.weight, "k/v proj": block.key.weight, "gate/up": block.up.weight,
                          "down": block.down.weight, "lm head": decoder.weights.head]
            for (name, inputs, outputs) in shapes {
                let x = backend.zeros([tokens, inputs], .f32, .workspace)
                let w = backend.zeros([outputs, inputs], .f32, .workspace)
                let y = backend.zeros([tokens, outputs], .f32, .workspace)
                fillRandom(x); fillRandom(w)
                let flops = 2.0 * Double(tokens * inputs * outputs)
                let raw = time(repeats) {
                    backend.blas.sgemm(transposeA: false, transposeB: true, m: tokens, n: outputs, k: inputs, alpha: 1,
                                       a: x.floats.baseAddress!, lda: inputs, b: w.floats.baseAddress!, ldb: inputs,
                                       beta: 0, c: y.floats.baseAddress!, ldc: outputs)
                }
                let ours = time(repeats) { backend.linear(y, x, w, bias: nil) }
                let weight = packed[name]!
                let quantized = time(repeats) { backend.linear(y, x, weight, bias: nil) }
                table.append([name, "\(tokens)×\(inputs)·\(inputs)×\(outputs)", gflops(flops, raw), gflops(flops, ours),
                              String(format: "%.1f%%", (ours / raw - 1) * 100), weight.dtype.rawValue, gflops(flops, quantized)])
                rows.append(["shape": name, "m": tokens, "k": inputs, "n": outputs,
                             "openblas_gflops": flops / raw / 1e9, "frugal_f32_gflops": flops / ours / 1e9,
                             "overhead": ours / raw - 1, "packed_dtype": weight.dtype.rawValue,
                             "frugal_packed_gflops": flops / quantized / 1e9])
            }
            print(Table(header: ["GEMM", "shape", "OpenBLAS GFLOP/s", "Frugal f32", "overhead", "packed", "Frugal packed"],
                        rows: table).render())

            let prompt = (0..<tokens).map { Int32(($0 * 7919) % c.vocabSize) }
            let generator = Generator(decoder: decoder)
            _ = generator.generate(prompt: Array(prompt.prefix(8)), options: GenerationOptions(maxTokens: 2))
            let (_, statistics) = generator.generate(prompt: prompt, options: GenerationOptions(maxTokens: decode))
            print(String(format: "prefill %d tokens: %.1f tokens/s;  decode %d tokens: %.1f tokens/s",
                         statistics.promptTokens, statistics.prefillTokensPerSecond,
                         statistics.generatedTokens, statistics.decodeTokensPerSecond))
            if let output {
                let result: [String: Any] = [
                    "date": ISO8601DateFormatter().string(from: Date()).prefix(10),
                    "device": "CPU, \(ProcessInfo.processInfo.activeProcessorCount) cores, \(backend.blas.libraryPath ?? "no BLAS")",
                    "git_rev": gitRevision(),
                    "command": "frugal bench --tokens \(tokens) --decode \(decode) --repeats \(repeats)",
                    "model": files.path.split(separator: "/").last.map(String.init) ?? files.path,
                    "gemm": rows,
                    "prefill_tokens": statistics.promptTokens, "prefill_tokens_per_s": statistics.prefillTokensPerSecond,
                    "decode_tokens": statistics.generatedTokens, "decode_tokens_per_s": statistics.decodeTokensPerSecond,
                ]
                let data = try JSONSerialization.data(withJSONObject: result, options: [.prettyPrinted, .sortedKeys])
                try data.write(to: URL(fileURLWithPath: output))
                print("wrote \(output)")
            }
        }

        private func fillRandom(_ t: Tensor) {
            var state: UInt32 = 12345
            for i in 0..<t.count {
                state = state &* 1_664_525 &+ 1_013_904_223
                t.floats[i] = Float(state >> 8) / Float(1 << 24) - 0.5
            }
        }

        /// Best wall time of `repeats` runs, after one warm-up.
        private func time(_ repeats: Int, _ body: () -> Void) -> Double {
            body()
            var best = Double.infinity
            for _ in 0..<max(1, repeats) {
                let start = ContinuousClock.now
                body()
                let d = ContinuousClock.now - start
                best = min(best, Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18)
            }
            return best
        }

        private func gflops(_ flops: Double, _ seconds: Double) -> String { String(format: "%.1f", flops / seconds / 1e9) }

        private func gitRevision() -> String {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["git", "rev-parse", "--short", "HEAD"]
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = FileHandle.nullDevice
            guard (try? process.run()) != nil else { return "unknown" }
            process.waitUntilExit()
            let text = String(data: pipe.fileHandleForReading.readDataToEndOfFile(), encoding: .utf8) ?? ""
            return text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }
}
