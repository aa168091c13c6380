// GPUCheck: every op of the CUDA backend, forward and backward, against a reference backend
// (the CPU's) on random inputs, with a tolerance per dtype — what `frugal gpu-check` runs.
import Foundation
import FrugalCore

/// Runs every op of a new `CUDABackend` and of `reference` on the same random inputs and compares
/// the results (outputs, gradients with their `=`/`+=` semantics, losses, reductions).
///
/// - Parameters:
///   - reference: the backend taken as truth (the CLI passes `CPUBackend()`; FrugalCUDA does not
///     depend on FrugalCPU).
///   - only: when given, only the checks whose names contain it (and no memory accounting): a
///     few kernels under `compute-sanitizer`.
///   - report: called with each result as soon as it is known (a CUDA fault stops the process).
/// - Returns: one result per check; a single failed result saying why when no GPU is usable.
public func runGPUChecks(reference: any TrainingBackend, options: CUDABackend.Options = .init(), only: String? = nil,
                         report: @escaping (CheckResult) -> Void = { _ in }) -> [CheckResult] {
    let gpu: CUDABackend
    do { gpu = try CUDABackend(options: options) } catch {
        let result = CheckResult(name: "CUDA backend", passed: false, maxError: .infinity, tolerance: 0, detail: "\(error)")
        report(result)
        return [result]
    }
    var checker = GPUChecker(gpu: gpu, cpu: reference, report: report, only: only)
    checker.run()
    checker.checkActivationDtypes()
    if only == nil {
        let memory = memoryAccountingCheck(gpu)
        report(memory)
        checker.results.append(memory)
    }
    // Again with 16-bit tensor-core operands (as bf16 and fp16 training run): GEMMs and attention.
    var lowPrecision = options
    lowPrecision.lowPrecisionMatmul = true
    guard let fast = try? CUDABackend(options: lowPrecision) else { return checker.results }
    var roundingChecker = GPUChecker(gpu: fast, cpu: reference, report: report, only: only)
    roundingChecker.roundsOperands = true
    roundingChecker.checkLinear()
    roundingChecker.checkAttention()
    return checker.results + roundingChecker.results
}

/// The memory the ledger counts against what the allocator holds and what the driver reports:
/// 300 MiB in tensors of every category raise the ledger by their rounded sizes, the allocator's
/// reservation by at least as much, and the driver's used memory by the allocator's new blocks
/// (within 4 MiB); released, the ledger returns to where it was and the allocator keeps them cached.
func memoryAccountingCheck(_ gpu: CUDABackend) -> CheckResult {
    gpu.synchronize()
    let ledgerBefore = gpu.ledger.snapshot.currentTotal, reservedBefore = gpu.reservedMemory.current
    let driverBefore = gpu.deviceMemory()
    let sizes = [(MemoryCategory.weights, 100 << 20), (.trainable, 10 << 20), (.gradients, 10 << 20), (.optimizer, 20 << 20),
                 (.activations, 150 << 20), (.workspace, 10 << 20 + 123)]
    var tensors = [Tensor]()
    for (category, bytes) in sizes { tensors.append(gpu.zeros([bytes / 4], .f32, category)) }
    gpu.synchronize()
    let ledgerGrowth = gpu.ledger.snapshot.currentTotal - ledgerBefore, reservedGrowth = gpu.reservedMemory.current - reservedBefore
    let after = gpu.deviceMemory()
    let driverGrowth = (after.total - after.free) - (driverBefore.total - driverBefore.free)
    let expected = sizes.reduce(0) { $0 + CUDAAllocator.roundedSize($1.1 / 4 * 4) }
    tensors.removeAll()
    let ledgerAfterRelease = gpu.ledger.snapshot.currentTotal
    var problems = [String]()
    if ledgerGrowth != expected { problems.append("ledger grew \(ledgerGrowth) bytes, tensors hold \(expected)") }
    if reservedGrowth < 0 || reservedGrowth > expected { problems.append("allocator reserved \(reservedGrowth) more bytes for \(expected)") }
    if abs(driverGrowth - reservedGrowth) > 4 << 20 {
        problems.append("driver's used memory grew \(driverGrowth) bytes, the allocator reserved \(reservedGrowth)")
    }
    if ledgerAfterRelease != ledgerBefore { problems.append("after release the ledger holds \(ledgerAfterRelease), before \(ledgerBefore)") }
    let error = Double(abs(driverGrowth - reservedGrowth)) / Double(max(expected, 1))
    return CheckResult(name: "memory: ledger by category vs allocator vs driver (300 MiB in 6 categories)", passed: problems.isEmpty,
                       maxError: error, tolerance: Double(4 << 20) / Double(expected),
                       detail: problems.isEmpty ? "ledger +\(expected), allocator +\(reservedGrowth), driver +\(driverGrowth) bytes"
                                                : problems.joined(separator: "; "))
}

/// Tolerances by the precision of the inputs (the arithmetic is f32 on both sides; the GPU sums
/// in another order and uses its own exp, erf and tanh).
enum GPUCheckTolerance {
    static let f32 = 1e-4
    static let attention = 2e-4
    static let sixteenBit = 1e-3
    /// Activations rounded to bf16 before a tensor-core GEMM (8 significant bits).
    static let roundedOperands = 2e-2
    /// One step of the dynamic 8-bit map near ±1 (0.0140625 of a block's absmax): a multiply-add the
    /// GPU fuses may land a moment on the other side of a midpoint between two codes.
    static let dynamic8Code = 1.5e-2
    /// A parameter stored in 16 bits after an update: one step of its dtype (2⁻⁸ of the largest
    /// value in bf16, 2⁻¹¹ in f16) where the f32 result, which the GPU computes with fused
    /// multiply-adds, lands on the other side of a rounding midpoint.
    static func sixteenBitParameter(_ dtype: DType) -> Double { dtype == .bf16 ? 4e-3 : 1e-3 }
}

/// The checks, run on a candidate backend (`gpu`) against a reference (`cpu`). Any two backends
/// will do: the tests run it CPU against CPU to check the harness itself without a GPU.
struct GPUChecker {
    let gpu: any TrainingBackend
    let cpu: any TrainingBackend
    let report: (CheckResult) -> Void
    /// Runs only the checks whose names contain this, when given.
    let only: String?
    var results = [CheckResult]()
    /// Whether the candidate rounds activations to 16 bits for its GEMMs (`lowPrecisionMatmul`):
    /// looser tolerances, and the check names say so.
    var roundsOperands = false
    private var state: UInt64 = 0x9E37_79B9_7F4A_7C15

    init(gpu: any TrainingBackend, cpu: any TrainingBackend, report: @escaping (CheckResult) -> Void, only: String? = nil) {
        self.gpu = gpu; self.cpu = cpu; self.report = report; self.only = only
    }

    /// Uniform values in [−scale, scale) (SplitMix64).
    mutating func random(_ count: Int, scale: Float = 1) -> [Float] {
        (0..<count).map { _ in
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            return (Float(z >> 40) / Float(1 << 24) * 2 - 1) * scale
        }
    }

    /// `values` encoded as `dtype` bytes (weights by `BlockQuantization.quantize`, dynamic 8-bit per block of 256).
    static func encode(_ values: [Float], _ dtype: DType) -> [UInt8] {
        var bytes = [UInt8]()
        switch dtype {
        case .f32: values.withUnsafeBytes { bytes = [UInt8]($0) }
        case .f16, .bf16:
            for v in values {
                let bits = dtype == .f16 ? HalfPrecision.floatToF16(v) : HalfPrecision.floatToBF16(v)
                bytes += [UInt8(bits & 0xFF), UInt8(bits >> 8)]
            }
        case .dynamic8, .dynamic8Unsigned:
            bytes = [UInt8](repeating: 0, count: dtype.byteCount(elements: values.count)!)
            bytes.withUnsafeMutableBytes { raw in
                DynamicQuantization.map(dtype).withUnsafeBufferPointer { map in
                    for b in 0..<values.count / 256 {
                        values[(256 * b)...].withUnsafeBufferPointer {
                            DynamicQuantization.quantizeBlock($0.baseAddress!, count: 256, into: raw.baseAddress! + 260 * b,
                                                              map: map.baseAddress!)
                        }
                    }
                }
            }
        default:
            bytes = [UInt8](repeating: 0, count: dtype.byteCount(elements: values.count)!)
            bytes.withUnsafeMutableBytes { BlockQuantization.quantize(dtype, values, $0.baseAddress!, count: values.count) }
        }
        return bytes
    }

    /// A tensor of `backend` holding `values` as `dtype`.
    static func make(_ backend: any TrainingBackend, _ values: [Float], _ shape: Shape, _ dtype: DType = .f32,
                     _ category: MemoryCategory = .activations) -> Tensor {
        encode(values, dtype).withUnsafeBytes { backend.upload($0, shape, dtype, category) }
    }

    /// Runs `body` on both backends and compares what it returns: tensors element by element,
    /// scalars by value, each relative to the reference's largest magnitude.
    mutating func check(_ name: String, tolerance: Double = GPUCheckTolerance.f32,
                        _ body: (any TrainingBackend) -> (tensors: [Tensor], scalars: [Double])) {
        let name = roundsOperands ? name + ", 16-bit tensor-core operands" : name
        if let only, !name.contains(only) { return }
        let tolerance = roundsOperands ? max(tolerance, GPUCheckTolerance.roundedOperands) : tolerance
        let expected = body(cpu), actual = body(gpu)
        var worst = 0.0, detail = ""
        for (index, (e, a)) in zip(expected.tensors, actual.tensors).enumerated() {
            let ev = cpu.download(e), av = gpu.download(a)
            guard ev.count == av.count else { worst = .infinity; detail = "output \(index): \(ev.count) vs \(av.count) values"; break }
            let (error, i) = CheckResult.worstDifference(ev, av)
            if !(error <= worst) { worst = error; detail = "output \(index)[\(i)]: reference \(ev[i]), GPU \(av[i])" }
        }
        for (index, (e, a)) in zip(expected.scalars, actual.scalars).enumerated() {
            let error = abs(e - a) / max(abs(e), 1e-6)
            if !(error <= worst) { worst = error.isNaN ? .infinity : error; detail = "scalar \(index): reference \(e), GPU \(a)" }
        }
        let result = CheckResult(name: name, passed: worst <= tolerance, maxError: worst, tolerance: tolerance,
                                    detail: worst <= tolerance ? "" : detail)
        report(result)
        results.append(result)
    }

    static func tolerance(_ dtype: DType) -> Double { dtype == .f32 ? GPUCheckTolerance.f32 : GPUCheckTolerance.sixteenBit }

    mutating func run() {
        checkLinear()
        checkEmbedding()
        checkNorms()
        checkColumnReductions()
        checkRope()
        checkAttention()
        checkActivations()
        checkElementwise()
        checkCrossEntropy()
        checkOptimizers()
        checkOffload()
    }

    // MARK: - The checks

    mutating func checkLinear() {
        let rows = 37, inputs = 256, outputs = 96
        let x = random(rows * inputs), w = random(outputs * inputs, scale: 0.2), b = random(outputs)
        let dy = random(rows * outputs), dw0 = random(outputs * inputs), db0 = random(outputs)
        for dtype in [DType.f32, .f16, .bf16, .q8_0, .nf4] {
            check("linear forward, \(dtype.rawValue) weight, bias", tolerance: Self.tolerance(dtype)) { be in
                let out = be.zeros([rows, outputs], .f32, .activations)
                be.linear(out, Self.make(be, x, [rows, inputs]), Self.make(be, w, [outputs, inputs], dtype, .weights),
                          bias: Self.make(be, b, [outputs], .f32, .weights))
                return ([out], [])
            }
            check("linear backward (dx =, dWeight +=, dBias +=), \(dtype.rawValue) weight", tolerance: Self.tolerance(dtype)) { be in
                let dx = be.zeros([rows, inputs], .f32, .activations)
                let dw = Self.make(be, dw0, [outputs, inputs], .f32, .gradients), db = Self.make(be, db0, [outputs], .f32, .gradients)
                be.linearBackward(dx: dx, dWeight: dw, dBias: db, dy: Self.make(be, dy, [rows, outputs]),
                                  x: Self.make(be, x, [rows, inputs]), weight: Self.make(be, w, [outputs, inputs], dtype, .weights))
                return ([dx, dw, db], [])
            }
        }
    }

    mutating func checkEmbedding() {
        let vocabulary = 50, d = 256, tokens: [Int32] = [3, 7, 3, 49, 0, 12, 7, 7]
        let table = random(vocabulary * d), dy = random(tokens.count * d), dt0 = random(vocabulary * d)
        for dtype in [DType.f32, .bf16, .q8_0, .nf4] {
            check("embedding forward, \(dtype.rawValue) table") { be in
                let out = be.zeros([tokens.count, d], .f32, .activations)
                be.embedding(out, Self.make(be, table, [vocabulary, d], dtype, .weights), tokens: tokens)
                return ([out], [])
            }
        }
        check("embedding backward (+=, repeated tokens)") { be in
            let dt = Self.make(be, dt0, [vocabulary, d], .f32, .gradients)
            be.embeddingBackward(dt, dy: Self.make(be, dy, [tokens.count, d]), tokens: tokens)
            return ([dt], [])
        }
    }

    mutating func checkNorms() {
        let rows = 13, n = 200
        let x = random(rows * n, scale: 2), w = random(n), b = random(n), dy = random(rows * n), dw0 = random(n), db0 = random(n)
        for (dtype, offset) in [(DType.f32, Float(0)), (.bf16, 1)] {
            check("rmsNorm forward, \(dtype.rawValue) weight, offset \(offset)") { be in
                let out = be.zeros([rows, n], .f32, .activations)
                be.rmsNorm(out, Self.make(be, x, [rows, n]), Self.make(be, w, [n], dtype, .weights), eps: 1e-5, weightOffset: offset)
                return ([out], [])
            }
            check("rmsNorm backward (dx =, dWeight +=), \(dtype.rawValue) weight") { be in
                let dx = be.zeros([rows, n], .f32, .activations), dw = Self.make(be, dw0, [n], .f32, .gradients)
                be.rmsNormBackward(dx: dx, dWeight: dw, dy: Self.make(be, dy, [rows, n]), x: Self.make(be, x, [rows, n]),
                                   weight: Self.make(be, w, [n], dtype, .weights), eps: 1e-5, weightOffset: offset)
                return ([dx, dw], [])
            }
        }
        check("layerNorm forward") { be in
            let out = be.zeros([rows, n], .f32, .activations)
            be.layerNorm(out, Self.make(be, x, [rows, n]), Self.make(be, w, [n]), Self.make(be, b, [n]), eps: 1e-5)
            return ([out], [])
        }
        // Fused with the residual add: the sum into its own tensor, or over x, and the normed rows.
        let residual = random(rows * n)
        for sumOverX in [false, true] {
            check("rmsNorm + residual add, sum \(sumOverX ? "over x" : "apart")") { be in
                let out = be.zeros([rows, n], .f32, .activations), input = Self.make(be, x, [rows, n])
                let sum = sumOverX ? input : be.zeros([rows, n], .f32, .activations)
                be.rmsNorm(out, sum: sum, input, residual: Self.make(be, residual, [rows, n]),
                           Self.make(be, w, [n], .bf16, .weights), eps: 1e-5, weightOffset: 1)
                return ([out, sum], [])
            }
            check("layerNorm + residual add, sum \(sumOverX ? "over x" : "apart")") { be in
                let out = be.zeros([rows, n], .f32, .activations), input = Self.make(be, x, [rows, n])
                let sum = sumOverX ? input : be.zeros([rows, n], .f32, .activations)
                be.layerNorm(out, sum: sum, input, residual: Self.make(be, residual, [rows, n]), Self.make(be, w, [n]),
                             Self.make(be, b, [n]), eps: 1e-5)
                return ([out, sum], [])
            }
        }
        check("layerNorm backward (dx =, dWeight +=, dBias +=)") { be in
            let dx = be.zeros([rows, n], .f32, .activations)
            let dw = Self.make(be, dw0, [n], .f32, .gradients), db = Self.make(be, db0, [n], .f32, .gradients)
            be.layerNormBackward(dx: dx, dWeight: dw, dBias: db, dy: Self.make(be, dy, [rows, n]), x: Self.make(be, x, [rows, n]),
                                 weight: Self.make(be, w, [n]), eps: 1e-5)
            return ([dx, dw, db], [])
        }
    }

    /// The parameter gradients that sum columns over 1,000 rows: eight row splits of 125 rows
    /// (`reduceColumns`), 200 and 96 columns (a partial block of 32).
    mutating func checkColumnReductions() {
        let rows = 1000, n = 200, outputs = 96
        let x = random(rows * n, scale: 2), w = random(n), dy = random(rows * n), dw0 = random(n), db0 = random(n)
        let weight = random(outputs * n, scale: 0.2), dyLinear = random(rows * outputs), dBias0 = random(outputs)
        check("linear backward dBias += over \(rows) rows (row splits)") { be in
            let db = Self.make(be, dBias0, [outputs], .f32, .gradients)
            be.linearBackward(dx: nil, dWeight: nil, dBias: db, dy: Self.make(be, dyLinear, [rows, outputs]),
                              x: Self.make(be, x, [rows, n]), weight: Self.make(be, weight, [outputs, n], .f32, .weights))
            return ([db], [])
        }
        check("rmsNorm backward dWeight += over \(rows) rows (row splits)") { be in
            let dx = be.zeros([rows, n], .f32, .activations), dw = Self.make(be, dw0, [n], .f32, .gradients)
            be.rmsNormBackward(dx: dx, dWeight: dw, dy: Self.make(be, dy, [rows, n]), x: Self.make(be, x, [rows, n]),
                               weight: Self.make(be, w, [n]), eps: 1e-5, weightOffset: 0)
            return ([dx, dw], [])
        }
        for (weightOnly, name) in [(false, "dWeight +=, dBias +="), (true, "dWeight += alone")] {
            check("layerNorm backward \(name) over \(rows) rows (row splits)") { be in
                let dx = be.zeros([rows, n], .f32, .activations), dw = Self.make(be, dw0, [n], .f32, .gradients)
                let db = weightOnly ? nil : Self.make(be, db0, [n], .f32, .gradients)
                be.layerNormBackward(dx: dx, dWeight: dw, dBias: db, dy: Self.make(be, dy, [rows, n]), x: Self.make(be, x, [rows, n]),
                                     weight: Self.make(be, w, [n]), eps: 1e-5)
                return ([dx, dw] + (db.map { [$0] } ?? []), [])
            }
        }
    }

    mutating func checkRope() {
        let tokens = 11, heads = 3, headDim = 32
        let x = random(tokens * heads * headDim), positions: [Int32] = (0..<Int32(tokens)).map { $0 * 37 % 500 }
        for half in [16, 8] {
            let frequencies = (0..<half).map { Float(pow(10000.0, -Double(2 * $0) / Double(2 * half))) }
            check("rope forward, \(2 * half) of \(headDim) dims rotate") { be in
                let t = Self.make(be, x, [tokens, heads * headDim])
                be.rope(t, heads: heads, headDim: headDim, positions: positions, inverseFrequencies: frequencies)
                return ([t], [])
            }
            check("rope backward, \(2 * half) of \(headDim) dims rotate") { be in
                let t = Self.make(be, x, [tokens, heads * headDim])
                be.ropeBackward(t, heads: heads, headDim: headDim, positions: positions, inverseFrequencies: frequencies)
                return ([t], [])
            }
        }
    }

    /// The attention layouts every attention check runs: GQA, MHA, MQA, packed segments with
    /// padding, KV-cache offsets, head sizes 32 to 256, several query blocks.
    static let attentionLayouts: [(String, AttentionLayout)] = [
        ("causal, GQA 4/2, d 64", AttentionLayout(batch: 2, queryLength: 37, keyLength: 37, queryOffset: 0, heads: 4, kvHeads: 2,
                                                  headDim: 64, scale: 0.125)),
        ("causal, MHA, d 128, 70 tokens", AttentionLayout(batch: 1, queryLength: 70, keyLength: 70, queryOffset: 0, heads: 2,
                                                          kvHeads: 2, headDim: 128, scale: 1 / Float(128).squareRoot())),
        ("packed segments and padding, GQA 6/2, d 32",
         AttentionLayout(batch: 2, queryLength: 40, keyLength: 40, queryOffset: 0, heads: 6, kvHeads: 2, headDim: 32,
                         scale: 1 / Float(32).squareRoot(),
                         segments: (0..<80).map { i in let t = i % 40; return t < 15 ? 0 : t < 33 ? 1 : -1 })),
        ("cache offset 35, 5 queries of 40 keys, MQA, d 80",
         AttentionLayout(batch: 1, queryLength: 5, keyLength: 40, queryOffset: 35, heads: 4, kvHeads: 1, headDim: 80,
                         scale: 0.1)),
        ("d 256, GQA 2/1", AttentionLayout(batch: 1, queryLength: 33, keyLength: 33, queryOffset: 0, heads: 2, kvHeads: 1,
                                           headDim: 256, scale: 0.0625)),
        ("cache offset 20, 130 queries of 150 keys, GQA 4/2, d 64",
         AttentionLayout(batch: 2, queryLength: 130, keyLength: 150, queryOffset: 20, heads: 4, kvHeads: 2, headDim: 64,
                         scale: 0.125)),
        // The GPU's GEMM path goes a query block at a time (`AttentionLayout.queryBlockSize`):
        // three blocks, the last partial; with segments; keys past the last query's position.
        ("causal, 389 tokens in 3 query blocks, GQA 4/2, d 64",
         AttentionLayout(batch: 2, queryLength: 389, keyLength: 389, queryOffset: 0, heads: 4, kvHeads: 2, headDim: 64,
                         scale: 0.125)),
        ("packed segments across 2 query blocks, MHA, d 32",
         AttentionLayout(batch: 1, queryLength: 300, keyLength: 300, queryOffset: 0, heads: 2, kvHeads: 2, headDim: 32,
                         scale: 1 / Float(32).squareRoot(), segments: (0..<300).map { $0 < 120 ? 0 : $0 < 280 ? 1 : -1 })),
        ("cache offset 20, 300 queries of 330 keys (10 unseen), MQA, d 64",
         AttentionLayout(batch: 1, queryLength: 300, keyLength: 330, queryOffset: 20, heads: 2, kvHeads: 1, headDim: 64,
                         scale: 0.125)),
        // With 16-bit activations, d 64, 96 and 128 run the tensor-core kernels (flash_attention.cu).
        ("packed segments and padding, GQA 4/2, d 64, 150 tokens",
         AttentionLayout(batch: 2, queryLength: 150, keyLength: 150, queryOffset: 0, heads: 4, kvHeads: 2, headDim: 64,
                         scale: 0.125, segments: (0..<300).map { i in let t = i % 150; return i < 150 || t < 40 ? 0 : t < 140 ? 1 : -1 })),
        ("causal, MHA, d 96 (Phi-3), 100 tokens",
         AttentionLayout(batch: 1, queryLength: 100, keyLength: 100, queryOffset: 0, heads: 2, kvHeads: 2, headDim: 96,
                         scale: 1 / Float(96).squareRoot())),
    ]

    /// The layouts of `attentionLayouts` whose labels are `labels`.
    static func attentionLayouts(_ labels: String...) -> [(String, AttentionLayout)] {
        attentionLayouts.filter { labels.contains($0.0) }
    }

    mutating func checkAttention() {
        for (label, l) in Self.attentionLayouts {
            let qCount = l.batch * l.queryLength * l.heads * l.headDim, kCount = l.batch * l.keyLength * l.kvHeads * l.headDim
            let q = random(qCount), k = random(kCount), v = random(kCount), dOut = random(qCount)
            let qShape: Shape = [l.batch * l.queryLength, l.heads * l.headDim], kShape: Shape = [l.batch * l.keyLength, l.kvHeads * l.headDim]
            check("attention forward, \(label)", tolerance: GPUCheckTolerance.attention) { be in
                let out = be.zeros(qShape, .f32, .activations)
                be.attention(out, q: Self.make(be, q, qShape), k: Self.make(be, k, kShape), v: Self.make(be, v, kShape), layout: l)
                return ([out], [])
            }
            check("attention backward (dq, dk, dv =), \(label)", tolerance: GPUCheckTolerance.attention) { be in
                let dq = be.zeros(qShape, .f32, .activations), dk = be.zeros(kShape, .f32, .activations)
                let dv = be.zeros(kShape, .f32, .activations)
                be.attentionBackward(dq: dq, dk: dk, dv: dv, dOut: Self.make(be, dOut, qShape), q: Self.make(be, q, qShape),
                                     k: Self.make(be, k, kShape), v: Self.make(be, v, kShape), layout: l)
                return ([dq, dk, dv], [])
            }
        }
    }

    mutating func checkActivations() {
        let n = 5000
        let x = random(n, scale: 4), up = random(n), dy = random(n)
        for activation in [Activation.silu, .relu, .geluTanh, .gelu] {
            check("\(activation.rawValue) forward") { be in
                let out = be.zeros([n], .f32, .activations)
                be.activate(out, Self.make(be, x, [n]), activation)
                return ([out], [])
            }
            check("\(activation.rawValue) backward") { be in
                let dx = be.zeros([n], .f32, .activations)
                be.activateBackward(dx: dx, dy: Self.make(be, dy, [n]), x: Self.make(be, x, [n]), activation)
                return ([dx], [])
            }
            check("gated \(activation.rawValue) forward (SwiGLU / GeGLU)") { be in
                let out = be.zeros([n], .f32, .activations)
                be.gated(out, gate: Self.make(be, x, [n]), up: Self.make(be, up, [n]), activation)
                return ([out], [])
            }
            check("gated \(activation.rawValue) backward") { be in
                let dg = be.zeros([n], .f32, .activations), du = be.zeros([n], .f32, .activations)
                be.gatedBackward(dGate: dg, dUp: du, dy: Self.make(be, dy, [n]), gate: Self.make(be, x, [n]),
                                 up: Self.make(be, up, [n]), activation)
                return ([dg, du], [])
            }
        }
    }

    mutating func checkElementwise() {
        let n = 3000
        let a = random(n), b = random(n)
        check("add, multiply, scale") { be in
            let sum = be.zeros([n], .f32, .activations), product = be.zeros([n], .f32, .activations)
            be.add(sum, Self.make(be, a, [n]), Self.make(be, b, [n]))
            be.multiply(product, Self.make(be, a, [n]), Self.make(be, b, [n]))
            be.scale(product, by: -0.75)
            return ([sum, product], [])
        }
        for dtype in [DType.f32, .f16, .bf16, .q8_0, .nf4] {
            check("copy from \(dtype.rawValue) into f32 at an offset") { be in
                let dst = be.zeros([n + 64], .f32, .activations), whole = n / dtype.blockSize * dtype.blockSize
                be.copy(dst, at: 64, from: Self.make(be, Array(a.prefix(whole)), [whole], dtype))
                return ([dst], [])
            }
        }
        // GGUF's other types, which Frugal reads but does not write: random blocks, their f16 scales
        // (at these byte offsets) kept finite.
        for (dtype, scales) in [(DType.q4_0, [0]), (.q4_1, [0, 2]), (.q4_K, [0, 2]), (.q6_K, [208])] {
            let blocks = 12
            var bytes = random(blocks * dtype.blockBytes).map { UInt8(truncatingIfNeeded: Int(($0 + 1) * 128)) }
            for b in 0..<blocks { for offset in scales { bytes[b * dtype.blockBytes + offset + 1] &= 0x3F } }
            check("copy from \(dtype.rawValue) (random blocks) into f32 at an offset") { be in
                let dst = be.zeros([blocks * dtype.blockSize + 64], .f32, .activations)
                let packed = bytes.withUnsafeBytes { be.upload($0, [blocks * dtype.blockSize], dtype, .weights) }
                be.copy(dst, at: 64, from: packed)
                return ([dst], [])
            }
        }
    }

    mutating func checkCrossEntropy() {
        let rows = 50, d = 64, vocabulary = 1000
        let hidden = random(rows * d), head = random(vocabulary * d, scale: 0.3), dHead0 = random(vocabulary * d)
        let targets: [Int32] = (0..<rows).map { $0 % 7 == 3 ? -100 : Int32($0 * 131 % vocabulary) }
        for dtype in [DType.f32, .bf16] {
            check("cross-entropy (loss, dHidden =, dHead +=), \(dtype.rawValue) head", tolerance: Self.tolerance(dtype)) { be in
                let dHidden = be.zeros([rows, d], .f32, .activations)
                let dHead = Self.make(be, dHead0, [vocabulary, d], .f32, .gradients)
                let loss = be.crossEntropy(hidden: Self.make(be, hidden, [rows, d]), head: Self.make(be, head, [vocabulary, d], dtype),
                                           targets: targets, dHidden: dHidden, dHead: dHead, gradientScale: 1 / 43)
                return ([dHidden, dHead], [loss])
            }
        }
    }

    /// Offload's transfers: a tensor through (pinned) host memory and back unchanged while later work
    /// reuses its device memory, counted on the host meanwhile; and the offloaded optimizer's round
    /// trip — the gradient into a host tensor, the host's AdamW, the rounded weight back into the
    /// device's tensor, the host tensors read back (as checkpoints read them) — exact, as the
    /// arithmetic is the host's on both sides.
    mutating func checkOffload() {
        let n = 70_000, p = random(n), g = random(n), host = cpu
        check("offload to host memory and restore: bytes unchanged, held on the host", tolerance: 0) { be in
            let before = be.hostLedger.snapshot.current[.activations, default: 0]
            var copy: HostCopy? = be.offload(Self.make(be, p, [n]))
            let reuse = be.zeros([n], .f32, .activations)
            be.scale(reuse, by: 2)
            let held = be.hostLedger.snapshot.current[.activations, default: 0] - before
            let restored = be.restore(copy!)
            copy = nil
            return ([restored, reuse], [Double(held), Double(be.hostLedger.snapshot.current[.activations, default: 0] - before)])
        }
        // The copy stream: block inputs dropped as they go (their memory reused by later work as soon
        // as the copies allow), one brought back ahead while other work runs, one brought back in line.
        let inputs = (0..<4).map { random(n, scale: Float($0 + 1)) }
        check("offload of dropped tensors on the copy stream, prefetch and restore: bytes unchanged", tolerance: 0) { be in
            let copies = inputs.map { values in
                let copy = be.offload(Self.make(be, values, [n]), dropping: true)
                be.scale(be.zeros([n], .f32, .activations), by: 2)
                return copy
            }
            be.prefetch(copies[2])
            let busy = be.zeros([4 * n], .f32, .activations)
            be.scale(busy, by: 3)
            let restored = [be.restore(copies[3]), be.restore(copies[2])]
            // Work on the prefetched tensor right away: it must wait for that tensor's copy.
            be.scale(restored[1], by: 1)
            return (restored + [be.restore(copies[0]), busy], [])
        }
        check("offloaded AdamW: gradient to the host, the host's step, bf16-rounded weight back", tolerance: 0) { be in
            let weight = Self.make(be, p, [n], .f32, .trainable), gradient = Self.make(be, g, [n], .f32, .gradients)
            let master = host.zeros([n], .f32, .optimizer), hostGradient = host.empty([n], .f32, .gradients)
            let m = host.zeros([n], .f32, .optimizer), v = host.zeros([n], .f32, .optimizer)
            be.copy(master, at: 0, from: weight)
            be.copy(hostGradient, at: 0, from: gradient)
            host.adamW(master, gradient: hostGradient, m: m, v: v, step: 1, learningRate: 1e-3, beta1: 0.9, beta2: 0.999,
                       epsilon: 1e-8, weightDecay: 0.01)
            host.copy(hostGradient, at: 0, from: master)
            host.roundInPlace(hostGradient, to: .bf16)
            be.copy(weight, at: 0, from: hostGradient)
            return ([weight, master], [])
        }
        check("offloaded AdamW of a bf16 weight: widened on the host, the host's step, rounded into bf16 there and back", tolerance: 0) { be in
            let weight = Self.make(be, p, [n], .bf16, .trainable), gradient = Self.make(be, g, [n], .f32, .gradients)
            let master = host.zeros([n], .f32, .optimizer), hostGradient = host.empty([n], .f32, .gradients)
            let bits = Tensor(storage: hostGradient.storage, shape: [n], dtype: .bf16)
            let m = host.zeros([n], .f32, .optimizer), v = host.zeros([n], .f32, .optimizer)
            be.copy(bits, at: 0, from: weight)
            host.copy(master, at: 0, from: bits)
            be.copy(hostGradient, at: 0, from: gradient)
            host.adamW(master, gradient: hostGradient, m: m, v: v, step: 1, learningRate: 1e-3, beta1: 0.9, beta2: 0.999,
                       epsilon: 1e-8, weightDecay: 0.01)
            host.roundInPlace(master, to: .bf16)
            host.copy(bits, at: 0, from: master)
            be.copy(weight, at: 0, from: bits)
            return ([weight, master], [])
        }
    }

    mutating func checkOptimizers() {
        let n = 700_000
        let p = random(n), g = random(n), m = random(n, scale: 0.1), v = random(n, scale: 0.01).map(abs)
        check("AdamW step 3 over f32 masters") { be in
            let pt = Self.make(be, p, [n], .f32, .trainable), mt = Self.make(be, m, [n], .f32, .optimizer)
            let vt = Self.make(be, v, [n], .f32, .optimizer)
            be.adamW(pt, gradient: Self.make(be, g, [n], .f32, .gradients), m: mt, v: vt, step: 3, learningRate: 1e-3, beta1: 0.9,
                     beta2: 0.999, epsilon: 1e-8, weightDecay: 0.01)
            return ([pt, mt, vt], [])
        }
        check("AdamW step 3 over several tensors in one launch: f32 masters with bf16 copies, a bf16 parameter, zeroed after",
              tolerance: GPUCheckTolerance.sixteenBit) { be in
            let sizes = [n, 37, 65_537, 1000]
            let tensors = sizes.enumerated().map { index, count in
                let bf16 = index == sizes.count - 1
                return AdamWTensors(parameter: Self.make(be, Array(p.prefix(count)), [count], bf16 ? .bf16 : .f32, .trainable),
                                    roundedCopy: bf16 ? nil : be.zeros([count], .bf16, .trainable),
                                    gradient: Self.make(be, Array(g.prefix(count)), [count], .f32, .gradients),
                                    m: Self.make(be, Array(m.prefix(count)), [count], .f32, .optimizer),
                                    v: Self.make(be, Array(v.prefix(count)), [count], .f32, .optimizer))
            }
            be.adamW(tensors, step: 3, learningRate: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0.01)
            be.zero(tensors.map(\.gradient))
            return (tensors.flatMap { [$0.parameter, $0.m, $0.v, $0.gradient] + ($0.roundedCopy.map { [$0] } ?? []) }, [])
        }
        // 700 000 values: 2,735 quantization blocks, the last one partly padding — more than the
        // thread blocks 8-bit AdamW starts (eight per multiprocessor), so each strides over several.
        let padding = [Float](repeating: 0, count: DynamicQuantization.paddedCount(n) - n)
        let m8 = m + padding, v8 = v + padding, shape8: Shape = [m8.count]
        func adamW8bit(_ be: any TrainingBackend) -> (parameter: Tensor, m: Tensor, v: Tensor) {
            let pt = Self.make(be, p, [n], .f32, .trainable)
            let mt = Self.make(be, m8, shape8, .dynamic8, .optimizer), vt = Self.make(be, v8, shape8, .dynamic8Unsigned, .optimizer)
            be.adamW8bit(pt, gradient: Self.make(be, g, [n], .f32, .gradients), m: mt, v: vt, step: 3, learningRate: 1e-3,
                         beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0.01)
            return (pt, mt, vt)
        }
        check("8-bit AdamW step 3: parameter") { be in ([adamW8bit(be).parameter], []) }
        check("8-bit AdamW step 3: moments decoded (within one code)", tolerance: GPUCheckTolerance.dynamic8Code) { be in
            let (_, mt, vt) = adamW8bit(be)
            return ([mt, vt], [])
        }
        check("SGD with momentum and weight decay") { be in
            let pt = Self.make(be, p, [n], .f32, .trainable), bt = Self.make(be, m, [n], .f32, .optimizer)
            be.sgd(pt, gradient: Self.make(be, g, [n], .f32, .gradients), momentumBuffer: bt, learningRate: 0.01, momentum: 0.9,
                   weightDecay: 0.001)
            return ([pt, bt], [])
        }
        // Pure bf16: the parameter stored in 16 bits, read widened, updated in f32, written rounded.
        for dtype in [DType.bf16, .f16] {
            let tolerance = GPUCheckTolerance.sixteenBitParameter(dtype)
            check("AdamW step 3 on a \(dtype.rawValue) parameter", tolerance: tolerance) { be in
                let pt = Self.make(be, p, [n], dtype, .trainable), mt = Self.make(be, m, [n], .f32, .optimizer)
                let vt = Self.make(be, v, [n], .f32, .optimizer)
                be.adamW(pt, gradient: Self.make(be, g, [n], .f32, .gradients), m: mt, v: vt, step: 3, learningRate: 1e-3,
                         beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0.01)
                return ([pt, mt, vt], [])
            }
            check("8-bit AdamW step 3 on a \(dtype.rawValue) parameter", tolerance: tolerance) { be in
                let pt = Self.make(be, p, [n], dtype, .trainable)
                let mt = Self.make(be, m8, shape8, .dynamic8, .optimizer), vt = Self.make(be, v8, shape8, .dynamic8Unsigned, .optimizer)
                be.adamW8bit(pt, gradient: Self.make(be, g, [n], .f32, .gradients), m: mt, v: vt, step: 3, learningRate: 1e-3,
                             beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0.01)
                return ([pt], [])
            }
            check("SGD with momentum and weight decay on a \(dtype.rawValue) parameter", tolerance: tolerance) { be in
                let pt = Self.make(be, p, [n], dtype, .trainable), bt = Self.make(be, m, [n], .f32, .optimizer)
                be.sgd(pt, gradient: Self.make(be, g, [n], .f32, .gradients), momentumBuffer: bt, learningRate: 0.01,
                       momentum: 0.9, weightDecay: 0.001)
                return ([pt, bt], [])
            }
        }
        check("sum of squares, all-finite", tolerance: 1e-9) { be in
            let t = Self.make(be, p, [n])
            var bad = p
            bad[n / 2] = .nan
            return ([], [be.sumOfSquares(t), be.allFinite(t) ? 1 : 0, be.allFinite(Self.make(be, bad, [n])) ? 1 : 0])
        }
        check("sums of squares of several tensors in one pass", tolerance: 1e-9) { be in
            let sizes = [n, 37, n / 3, 65_536, 65_537]
            return ([], be.sumsOfSquares(sizes.map { Self.make(be, Array(p.prefix($0)), [$0]) }))
        }
        for dtype in [DType.f16, .bf16] {
            check("round in place to \(dtype.rawValue), zero", tolerance: 0) { be in
                let t = Self.make(be, p, [n]), z = Self.make(be, g, [n])
                be.roundInPlace(t, to: dtype)
                be.zero(z)
                return ([t, z], [])
            }
        }
    }
}

// MARK: - 16-bit activations

extension GPUCheckTolerance {
    /// A 16-bit output both sides round from nearly the same f32 value: two units in the last place
    /// of the largest value (bf16 keeps 8 significant bits, f16 11).
    static func sixteenBitOutput(_ dtype: DType) -> Double { dtype == .f16 ? 1.0 / 512 : 1.0 / 64 }
}

extension GPUChecker {
    /// The ops with forward activations stored in bf16 (and f16 for a few), both backends on the
    /// same 16-bit inputs: 16-bit outputs within two units in the last place, f32 gradients as the
    /// 16-bit checks above; GEMMs, whose operands the GPU rounds to the activations' dtype (an
    /// f32 or packed weight, dy in the backward, attention's probabilities), as the rounded-operand
    /// checks.
    mutating func checkActivationDtypes() {
        for dtype in [DType.bf16, .f16] { checkLinearActivations(dtype) }
        for dtype in [DType.bf16, .f16] { checkNormActivations(dtype) }
        checkAttentionActivations(.bf16, cases: Self.attentionLayouts("causal, GQA 4/2, d 64", "packed segments and padding, GQA 6/2, d 32",
                                                                      "cache offset 35, 5 queries of 40 keys, MQA, d 80",
                                                                      "causal, 389 tokens in 3 query blocks, GQA 4/2, d 64",
                                                                      "cache offset 20, 300 queries of 330 keys (10 unseen), MQA, d 64",
                                                                      "packed segments and padding, GQA 4/2, d 64, 150 tokens",
                                                                      "packed segments across 2 query blocks, MHA, d 32",
                                                                      "causal, MHA, d 96 (Phi-3), 100 tokens"))
        checkAttentionActivations(.f16, cases: Self.attentionLayouts("causal, MHA, d 128, 70 tokens",
                                                                     "packed segments and padding, GQA 4/2, d 64, 150 tokens"))
        for dtype in [DType.bf16, .f16] { checkElementwiseActivations(dtype) }
    }

    mutating func checkLinearActivations(_ a: DType) {
        let rows = 37, inputs = 256, outputs = 96, name = a.rawValue
        let x = random(rows * inputs), w = random(outputs * inputs, scale: 0.2), b = random(outputs), out0 = random(rows * outputs)
        let dy = random(rows * outputs), dx0 = random(rows * inputs), dw0 = random(outputs * inputs), db0 = random(outputs)
        let output = GPUCheckTolerance.sixteenBitOutput(a), rounded = GPUCheckTolerance.roundedOperands
        // (weight dtype, bias dtype, accumulate): the weight in x's dtype with a bias of f32 or of
        // x's dtype; an f32 weight accumulated into out (a LoRA branch); packed and other weights.
        let other: DType = a == .bf16 ? .f16 : .bf16
        let cases: [(DType, DType?, Bool)] = [(a, .f32, false), (a, a, true), (.f32, nil, true), (other, nil, false),
                                              (.q8_0, nil, false), (.nf4, .f32, false)]
        for (weightType, biasType, accumulate) in cases {
            let label = "\(weightType.rawValue) weight" + (biasType.map { ", \($0.rawValue) bias" } ?? "") + (accumulate ? ", out +=" : "")
            check("linear \(name) activations, \(label)", tolerance: weightType == a ? output : max(output, rounded)) { be in
                let out = Self.make(be, out0, [rows, outputs], a)
                be.linear(out, Self.make(be, x, [rows, inputs], a), Self.make(be, w, [outputs, inputs], weightType, .weights),
                          bias: biasType.map { Self.make(be, b, [outputs], $0, .weights) }, accumulate: accumulate)
                return ([out], [])
            }
        }
        for (weightType, accumulate) in [(a, false), (.f32, true), (.nf4, false)] {
            let frozen = weightType.isQuantized
            check("linearBackward \(name) activations (dx \(accumulate ? "+=" : "=")\(frozen ? "" : ", dWeight +=, dBias +=")), "
                  + "\(weightType.rawValue) weight", tolerance: rounded) { be in
                let dx = Self.make(be, dx0, [rows, inputs], .f32, .gradients)
                let dw = frozen ? nil : Self.make(be, dw0, [outputs, inputs], .f32, .gradients)
                let db = frozen ? nil : Self.make(be, db0, [outputs], .f32, .gradients)
                be.linearBackward(dx: dx, dWeight: dw, dBias: db, dy: Self.make(be, dy, [rows, outputs], .f32, .gradients),
                                  x: Self.make(be, x, [rows, inputs], a),
                                  weight: Self.make(be, w, [outputs, inputs], weightType, .weights), accumulate: accumulate)
                return ([dx] + [dw, db].compactMap { $0 }, [])
            }
        }
        // A frozen projection whose input was not kept: the input gradient alone, from its dtype.
        for weightType in [a, .nf4] {
            check("inputGradient \(name) activations (dx +=), \(weightType.rawValue) weight", tolerance: rounded) { be in
                let dx = Self.make(be, dx0, [rows, inputs], .f32, .gradients)
                be.inputGradient(dx: dx, dy: Self.make(be, dy, [rows, outputs], .f32, .gradients),
                                 weight: Self.make(be, w, [outputs, inputs], weightType, .weights), activations: a, accumulate: true)
                return ([dx], [])
            }
        }
        // A projection and its LoRA-like branch sharing one gradient operand (rounded once on the GPU).
        check("linearBackward \(name) activations, two calls sharing gradientOperand (dx =, +=; dWeight +=)", tolerance: rounded) { be in
            let weight = Self.make(be, w, [outputs, inputs], a, .weights), input = Self.make(be, x, [rows, inputs], a)
            let dx = be.zeros([rows, inputs], .f32, .gradients), dw = Self.make(be, dw0, [outputs, inputs], .f32, .gradients)
            let operand = be.gradientOperand(Self.make(be, dy, [rows, outputs], .f32, .gradients), activations: a,
                                             weights: [weight, weight])
            be.linearBackward(dx: dx, dWeight: dw, dBias: nil, dy: operand, x: input, weight: weight, accumulate: false)
            be.linearBackward(dx: dx, dWeight: nil, dBias: nil, dy: operand, x: input, weight: weight, accumulate: true)
            return ([dx, dw], [])
        }
    }

    mutating func checkNormActivations(_ a: DType) {
        let rows = 13, n = 200, name = a.rawValue, output = GPUCheckTolerance.sixteenBitOutput(a)
        let x = random(rows * n, scale: 2), residual = random(rows * n), w = random(n), b = random(n)
        let dy = random(rows * n), dw0 = random(n), db0 = random(n)
        for (weightType, offset) in [(DType.f32, Float(0)), (a, 1)] {
            check("rmsNorm \(name) activations, \(weightType.rawValue) weight, offset \(offset)", tolerance: output) { be in
                let out = be.zeros([rows, n], a, .activations)
                be.rmsNorm(out, Self.make(be, x, [rows, n], a), Self.make(be, w, [n], weightType, .weights), eps: 1e-5,
                           weightOffset: offset)
                return ([out], [])
            }
            check("rmsNormBackward \(name) activations (dx =, dWeight +=), \(weightType.rawValue) weight",
                  tolerance: GPUCheckTolerance.sixteenBit) { be in
                let dx = be.zeros([rows, n], .f32, .gradients), dw = Self.make(be, dw0, [n], .f32, .gradients)
                be.rmsNormBackward(dx: dx, dWeight: dw, dy: Self.make(be, dy, [rows, n], .f32, .gradients),
                                   x: Self.make(be, x, [rows, n], a), weight: Self.make(be, w, [n], weightType, .weights),
                                   eps: 1e-5, weightOffset: offset)
                return ([dx, dw], [])
            }
        }
        for sumOverX in [false, true] {
            let label = "residual add, sum \(sumOverX ? "over x" : "apart")"
            check("rmsNorm \(name) activations + \(label)", tolerance: output) { be in
                let out = be.zeros([rows, n], a, .activations), input = Self.make(be, x, [rows, n], a)
                let sum = sumOverX ? input : be.zeros([rows, n], a, .activations)
                be.rmsNorm(out, sum: sum, input, residual: Self.make(be, residual, [rows, n], a), Self.make(be, w, [n], .f32, .weights),
                           eps: 1e-5, weightOffset: 1)
                return ([out, sum], [])
            }
            check("layerNorm \(name) activations + \(label)", tolerance: output) { be in
                let out = be.zeros([rows, n], a, .activations), input = Self.make(be, x, [rows, n], a)
                let sum = sumOverX ? input : be.zeros([rows, n], a, .activations)
                be.layerNorm(out, sum: sum, input, residual: Self.make(be, residual, [rows, n], a), Self.make(be, w, [n], a, .weights),
                             Self.make(be, b, [n], a, .weights), eps: 1e-5)
                return ([out, sum], [])
            }
        }
        check("layerNormBackward \(name) activations (dx =, dWeight +=, dBias +=)", tolerance: GPUCheckTolerance.sixteenBit) { be in
            let dx = be.zeros([rows, n], .f32, .gradients)
            let dw = Self.make(be, dw0, [n], .f32, .gradients), db = Self.make(be, db0, [n], .f32, .gradients)
            be.layerNormBackward(dx: dx, dWeight: dw, dBias: db, dy: Self.make(be, dy, [rows, n], .f32, .gradients),
                                 x: Self.make(be, x, [rows, n], a), weight: Self.make(be, w, [n], .f32, .weights), eps: 1e-5)
            return ([dx, dw, db], [])
        }
    }

    /// Attention in `a`: the forward, then the backward given the forward's output and statistics
    /// (as a training step runs it on a backend that keeps them) and without them (recomputed).
    mutating func checkAttentionActivations(_ a: DType, cases: [(String, AttentionLayout)]) {
        let name = a.rawValue, tolerance = GPUCheckTolerance.roundedOperands
        for (label, l) in cases {
            let qCount = l.batch * l.queryLength * l.heads * l.headDim, kCount = l.batch * l.keyLength * l.kvHeads * l.headDim
            let q = random(qCount), k = random(kCount), v = random(kCount), dOut = random(qCount)
            let qShape: Shape = [l.batch * l.queryLength, l.heads * l.headDim]
            let kShape: Shape = [l.batch * l.keyLength, l.kvHeads * l.headDim], rows = l.batch * l.heads * l.queryLength
            check("attention \(name) activations, \(label)", tolerance: tolerance) { be in
                let out = be.zeros(qShape, a, .activations)
                be.attention(out, q: Self.make(be, q, qShape, a), k: Self.make(be, k, kShape, a), v: Self.make(be, v, kShape, a),
                             layout: l)
                return ([out], [])
            }
            for kept in [true, false] {
                check("attentionBackward \(name) activations (dq, dk, dv =), \(label), "
                      + (kept ? "forward's out and log-sum-exp" : "recomputed"), tolerance: tolerance) { be in
                    let qt = Self.make(be, q, qShape, a), kt = Self.make(be, k, kShape, a), vt = Self.make(be, v, kShape, a)
                    var out: Tensor?, lse: Tensor?
                    if kept && be.usesAttentionStatistics {
                        out = be.zeros(qShape, a, .activations)
                        lse = be.zeros([rows], .f32, .activations)
                        be.attention(out!, q: qt, k: kt, v: vt, layout: l, logSumExp: lse)
                    }
                    let dq = be.zeros(qShape, .f32, .gradients), dk = be.zeros(kShape, .f32, .gradients)
                    let dv = be.zeros(kShape, .f32, .gradients)
                    be.attentionBackward(dq: dq, dk: dk, dv: dv, dOut: Self.make(be, dOut, qShape, .f32, .gradients), q: qt, k: kt,
                                         v: vt, layout: l, out: out, logSumExp: lse)
                    return ([dq, dk, dv], [])
                }
            }
        }
    }

    mutating func checkElementwiseActivations(_ a: DType) {
        let n = 3000, name = a.rawValue, output = GPUCheckTolerance.sixteenBitOutput(a)
        let x = random(n, scale: 4), y = random(n), dy = random(n), dst0 = random(n + 64)
        check("add, multiply, scale \(name) activations", tolerance: output) { be in
            let sum = be.zeros([n], a, .activations), product = be.zeros([n], a, .activations)
            be.add(sum, Self.make(be, x, [n], a), Self.make(be, y, [n], a))
            be.multiply(product, Self.make(be, x, [n], a), Self.make(be, y, [n], a))
            be.scale(product, by: -0.75)
            return ([sum, product], [])
        }
        check("copy from f32 into \(name) at an offset (rounded to nearest even)", tolerance: 0) { be in
            let dst = Self.make(be, dst0, [n + 64], a)
            be.copy(dst, at: 64, from: Self.make(be, x, [n]))
            return ([dst], [])
        }
        for activation in [Activation.silu, .geluTanh] {
            check("\(activation.rawValue) \(name) activations", tolerance: output) { be in
                let out = be.zeros([n], a, .activations)
                be.activate(out, Self.make(be, x, [n], a), activation)
                return ([out], [])
            }
            check("gated \(activation.rawValue) \(name) activations", tolerance: output) { be in
                let out = be.zeros([n], a, .activations)
                be.gated(out, gate: Self.make(be, x, [n], a), up: Self.make(be, y, [n], a), activation)
                return ([out], [])
            }
            // Gradients in f32, and in 16 bits as the projections' tensor-core GEMMs read them (`gradientOperandType`).
            for (gradients, into, tolerance) in [(DType.f32, "", GPUCheckTolerance.sixteenBit), (a, " into 16-bit gradients", output)] {
                check("\(activation.rawValue) backward\(into), \(name) activations", tolerance: tolerance) { be in
                    let dx = be.zeros([n], gradients, .gradients)
                    be.activateBackward(dx: dx, dy: Self.make(be, dy, [n], .f32, .gradients), x: Self.make(be, x, [n], a), activation)
                    return ([dx], [])
                }
                check("gated \(activation.rawValue) backward\(into), \(name) activations", tolerance: tolerance) { be in
                    let dg = be.zeros([n], gradients, .gradients), du = be.zeros([n], gradients, .gradients)
                    be.gatedBackward(dGate: dg, dUp: du, dy: Self.make(be, dy, [n], .f32, .gradients), gate: Self.make(be, x, [n], a),
                                     up: Self.make(be, y, [n], a), activation)
                    return ([dg, du], [])
                }
            }
        }
        let tokens = 11, heads = 3, headDim = 32, half = 16
        let rotated = random(tokens * heads * headDim), positions: [Int32] = (0..<Int32(tokens)).map { $0 * 37 % 500 }
        let frequencies = (0..<half).map { Float(pow(10000.0, -Double(2 * $0) / Double(2 * half))) }
        check("rope \(name) activations", tolerance: output) { be in
            let t = Self.make(be, rotated, [tokens, heads * headDim], a)
            be.rope(t, heads: heads, headDim: headDim, positions: positions, inverseFrequencies: frequencies)
            return ([t], [])
        }
    }
}
