// CUDABackend: the GPU implementation of TrainingBackend — kernels compiled by NVRTC, GEMMs
// through cuBLASLt, memory from a caching allocator, the work on one stream and checkpointed block
// inputs' copies on a second (CUDAOffload.swift).
// The class, its memory and launch helpers live here; each op lives in its own file
// (CUDALinear.swift, CUDANorms.swift, CUDAAttention.swift, …), beside its kernel in Kernels/.
import Foundation
import FrugalCore

/// The CUDA implementation of `TrainingBackend`.
///
/// Ops queue work on one stream and return (the copies of checkpointed block inputs go on a copy
/// stream beside it, `CopyStream`); only `download` and the ops whose result is a host
/// value (`crossEntropy`'s loss, `sumOfSquares`, `allFinite`) wait for the device. Small host
/// arrays an op needs (token ids, positions) travel through pinned staging slots. A CUDA failure
/// inside an op stops the process with the driver's message, as a CPU op's precondition does;
/// out of memory names the request, the device's free memory and `frugal plan`.
public final class CUDABackend: TrainingBackend, @unchecked Sendable {
    public let device = DeviceKind.cuda
    /// The attention backward reuses the forward's output and log-sum-exp.
    public let usesAttentionStatistics = true
    public let ledger = MemoryLedger()
    public let hostLedger = MemoryLedger()
    /// Wall time per op while enabled: each op then waits for the GPU to finish it.
    public let profile = OpProfile()
    public let driver: CUDADriver
    public let kernels: KernelLibrary
    public let blas: CuBLASLt
    /// The GPU's ordinal, name and architecture (e.g. "sm_90").
    public let ordinal: Int
    public let name: String
    public let architecture: String
    public let options: Options

    let deviceHandle: Int32
    let context: CUDADriver.Handle
    let stream: CUDADriver.Handle
    let allocator: CUDAAllocator
    let staging: HostStaging
    /// Pinned buffers of offloaded activations (CUDAOffload.swift).
    let pinnedPool: PinnedPool
    /// The stream that moves checkpointed block inputs, or nil (`Options.copyStream`).
    let copies: CopyStream?
    public let multiprocessors: Int
    /// cuBLASLt's scratch memory.
    private(set) var blasWorkspace: Tensor!
    private let sharedMemoryLock = NSLock()
    private var sharedMemoryConfigured: [String: Int] = [:]

    /// How the backend trades exactness for speed.
    public struct Options: Sendable {
        /// Let f32 GEMMs round their inputs to TF32 (tensor cores; ~1e-3 relative error).
        public var allowTF32: Bool
        /// For f16/bf16 weights, round f32 activations to the weight's dtype and run the GEMM on
        /// tensor cores (f32 accumulation and output) instead of widening the weight to f32 (16-bit
        /// activations always run their GEMMs in their own dtype).
        public var lowPrecisionMatmul: Bool
        /// Bytes of cuBLASLt workspace.
        public var blasWorkspaceBytes: Int
        /// Bytes of a widened weight tile or a logits chunk.
        public var tileBytes: Int
        /// Bytes of attention scores (and their gradients) held at once: a chunk of heads at a time.
        public var attentionWorkspaceBytes: Int
        /// Run the attention of f16/bf16 activations with head dimension 64, 96 or 128 on the
        /// FlashAttention-style tensor-core kernels (Kernels/flash_attention.cu) rather than
        /// through batched GEMMs. `FRUGAL_FLASH_ATTENTION=0` in the environment turns it off.
        public var flashAttention: Bool
        /// Move offloaded block inputs on a second stream, alongside the compute, and bring each
        /// back while the block after it runs its backward (`Backend.prefetch`); else on the one
        /// stream, in line with the compute. `FRUGAL_COPY_STREAM=0` in the environment turns it off.
        public var copyStream: Bool

        public init(allowTF32: Bool = false, lowPrecisionMatmul: Bool = false, blasWorkspaceBytes: Int = 32 << 20,
                    tileBytes: Int = 64 << 20, attentionWorkspaceBytes: Int = 256 << 20, flashAttention: Bool = true,
                    copyStream: Bool = true) {
            self.allowTF32 = allowTF32
            self.lowPrecisionMatmul = lowPrecisionMatmul
            self.blasWorkspaceBytes = blasWorkspaceBytes
            self.tileBytes = tileBytes
            self.attentionWorkspaceBytes = attentionWorkspaceBytes
            self.flashAttention = flashAttention
            self.copyStream = copyStream
        }
    }

    /// A backend on GPU `ordinal`: opens the driver, NVRTC and cuBLASLt, retains the device's
    /// primary context and creates the stream.
    /// - Throws: `CUDAError` saying plainly what is missing (no driver, no GPU, no NVRTC, no cuBLASLt).
    public init(ordinal: Int = 0, options: Options = Options(), environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        let folders = DynamicLibrary.searchFolders(environment: environment)
        driver = try CUDADriver(folders: folders)
        try driver.initialize()
        let count = try driver.deviceCount()
        guard ordinal < count else {
            throw CUDAError.noDevice(count == 0 ? "the NVIDIA driver sees no GPU" : "GPU \(ordinal) asked for, \(count) present")
        }
        self.ordinal = ordinal
        deviceHandle = try driver.device(ordinal)
        name = try driver.name(deviceHandle)
        let cc = try driver.computeCapability(deviceHandle)
        architecture = "sm_\(cc.major)\(cc.minor)"
        var options = options
        // The tensor-core kernels' bf16 products need Ampere (sm_80) or later.
        if environment["FRUGAL_FLASH_ATTENTION"] == "0" || cc.major < 8 { options.flashAttention = false }
        if environment["FRUGAL_COPY_STREAM"] == "0" { options.copyStream = false }
        self.options = options
        multiprocessors = try driver.attribute(.multiprocessorCount, deviceHandle)
        context = try driver.retainPrimaryContext(deviceHandle)
        stream = try driver.createStream()
        copies = options.copyStream ? try CopyStream(driver: driver) : nil
        let compiler = try KernelCompiler(nvrtc: try NVRTC(folders: folders), sources: try KernelSources.locate(environment: environment),
                                          includeFolder: KernelCompiler.findIncludeFolder(environment: environment),
                                          cacheFolder: KernelCompiler.defaultCacheFolder(environment: environment))
        kernels = KernelLibrary(driver: driver, compiler: compiler, architecture: architecture)
        blas = try CuBLASLt(folders: folders)
        allocator = CUDAAllocator(driver: driver)
        staging = try HostStaging(driver: driver)
        pinnedPool = PinnedPool(driver: driver)
        blasWorkspace = zeros([options.blasWorkspaceBytes / 4], .f32, .workspace)
    }

    deinit {
        try? driver.synchronize(stream)
        copies?.close()
        blasWorkspace = nil
        try? allocator.releaseCached()
        driver.destroyStream(stream)
        driver.releasePrimaryContext(deviceHandle)
    }

    /// Runs `body`, stopping the process with the error's message when it throws (ops cannot throw).
    /// With the profile on, waits for the op's work and records its time.
    @discardableResult
    func must<T>(_ what: @autoclosure () -> String, _ body: () throws -> T) -> T {
        do {
            try driver.setCurrent(context)
            guard profile.enabled else { return try body() }
            return try profile.measure(Self.profileName(what())) {
                let result = try body()
                try driver.synchronize(stream)
                return result
            }
        } catch let error as OutOfMemory {
            error.stop()
        } catch {
            preconditionFailure("\(what()): \(error)")
        }
    }

    /// An op's profile entry: the first word of its description, and a linear's weight dtype.
    static func profileName(_ what: String) -> String {
        let op = String(what.prefix { $0 != " " && $0 != "(" })
        guard op.hasPrefix("linear") else { return op }
        let dtype = DType.allCases.first { what.contains(" \($0.rawValue) ") }
        return dtype.map { "\(op) \($0.rawValue)" } ?? op
    }

    /// A timer of a step's phases by events on the stream.
    public func makePhaseTimer() -> PhaseTimer { CUDAPhaseTimer(backend: self) }

    /// Waits for all queued work, the copy stream's too.
    public func synchronize() {
        must("synchronize") {
            try driver.synchronize(stream)
            try copies?.releaseFinished(waiting: true)
        }
    }

    /// Device memory free and total, in bytes, as the driver reports it.
    public func deviceMemory() -> (free: Int, total: Int) { must("cuMemGetInfo") { try driver.memoryInfo() } }

    /// Bytes the caching allocator holds from the driver now, at its peak, and in its cache.
    public var reservedMemory: (current: Int, peak: Int, cached: Int) {
        (allocator.reservedBytes, allocator.peakReservedBytes, allocator.cachedBytes)
    }

    // MARK: - Memory

    /// A new tensor whose contents are unspecified, for outputs an op overwrites entirely.
    public func empty(_ shape: Shape, _ dtype: DType, _ category: MemoryCategory) -> Tensor {
        must("empty(\(shape), \(dtype), \(category.rawValue))") { try allocate(shape, dtype, category) }
    }

    /// A new tensor, not zero-filled (for workspace the op overwrites).
    /// - Throws: `OutOfMemory` when the device, or the ledger's budget, has no room.
    public func allocate(_ shape: Shape, _ dtype: DType, _ category: MemoryCategory) throws -> Tensor {
        guard let bytes = dtype.byteCount(elements: shape.count) else {
            throw FrugalError.invalidArgument("shape \(shape) is not a whole number of \(dtype) blocks")
        }
        try driver.setCurrent(context)
        // Block inputs whose copies to the host are done give back their memory first (over the
        // budget, after waiting for every copy); out of device memory, the allocation waits for the
        // copies before it gives up.
        if let copies, copies.holdsMemory { try copies.releaseFinished(waiting: !ledger.fits(bytes)) }
        guard ledger.fits(bytes) else { throw OutOfMemory.overBudget(ledger, device: .cuda, requested: bytes, category: category) }
        let pointer: DevicePointer, size: Int
        do {
            (pointer, size) = try allocator.allocate(bytes, category: category)
        } catch CUDAError.outOfMemory where copies?.holdsMemory == true {
            try copies?.releaseFinished(waiting: true)
            return try allocate(shape, dtype, category)
        } catch let CUDAError.outOfMemory(requested, _, free, total) {
            throw OutOfMemory(device: .cuda, requested: requested, category: category, free: free, total: total, isBudget: false,
                              memory: ledger.snapshot, advice: ledger.advice)
        }
        let allocator = allocator
        let storage = TensorStorage(pointer: UnsafeMutableRawPointer(bitPattern: UInt(pointer))!, byteCount: size, category: category,
                                    device: .cuda, ledger: ledger,
                                    release: { allocator.release(DevicePointer(UInt(bitPattern: $0)), size: size) })
        return Tensor(storage: storage, shape: shape, dtype: dtype)
    }

    public func zeros(_ shape: Shape, _ dtype: DType, _ category: MemoryCategory) -> Tensor {
        must("zeros(\(shape), \(dtype), \(category.rawValue))") {
            let tensor = try allocate(shape, dtype, category)
            try driver.memsetAsync(tensor.address, 0, bytes: tensor.storage.byteCount, stream: stream)
            return tensor
        }
    }

    public func upload(_ bytes: UnsafeRawBufferPointer, _ shape: Shape, _ dtype: DType, _ category: MemoryCategory) -> Tensor {
        must("upload(\(shape), \(dtype))") {
            let tensor = try allocate(shape, dtype, category)
            precondition(bytes.count == tensor.byteCount, "upload of \(bytes.count) bytes into \(shape) \(dtype)")
            // A synchronous copy from pageable memory: it runs after the stream's queued work
            // (the stream is a blocking one) and the caller may free `bytes` on return.
            if let base = bytes.baseAddress, bytes.count > 0 { try driver.copy(to: tensor.address, from: base, bytes: bytes.count) }
            return tensor
        }
    }

    public func download(_ tensor: Tensor) -> [Float] {
        let raw = downloadBytes(tensor)
        return [Float](unsafeUninitializedCapacity: tensor.count) { buffer, initialized in
            raw.withUnsafeBytes { BlockQuantization.dequantize(tensor.dtype, $0.baseAddress!, buffer.baseAddress!, count: tensor.count) }
            initialized = tensor.count
        }
    }

    /// The tensor's raw bytes, in `dtype`'s layout (waits for the stream); a host tensor's too.
    public func downloadBytes(_ tensor: Tensor) -> [UInt8] {
        must("download(\(tensor.shape), \(tensor.dtype))") {
            var bytes = [UInt8](repeating: 0, count: tensor.byteCount)
            try bytes.withUnsafeMutableBytes {
                try transfer(to: $0.baseAddress!, on: .cpu, from: tensor.rawPointer, on: tensor.storage.device, bytes: tensor.byteCount)
            }
            return bytes
        }
    }

    /// A device copy of a small host array (through the pinned staging slots), as workspace.
    func stage<T>(_ values: [T]) throws -> Tensor {
        let bytes = max(1, values.count * MemoryLayout<T>.stride)
        let tensor = try allocate([bytes / 4 + 1], .f32, .workspace)
        try values.withUnsafeBytes { try staging.copy($0, to: tensor.address, stream: stream) }
        return tensor
    }

    public func copy(_ dst: Tensor, at dstOffset: Int, from src: Tensor) {
        precondition(dstOffset + src.count <= dst.count, "copy: \(src.count) values at \(dstOffset) into \(dst.count)")
        must("copy \(src.dtype) into \(dst.dtype)") {
            if dst.dtype == src.dtype, let offset = dst.dtype.byteCount(elements: dstOffset) {
                try transfer(to: dst.rawPointer + offset, on: dst.storage.device, from: src.rawPointer, on: src.storage.device,
                             bytes: src.byteCount)
                return
            }
            // Into f32 from any dtype; into f16 or bf16 from f32 (rounded).
            precondition((dst.dtype == .f32 || (src.dtype == .f32 && (dst.dtype == .f16 || dst.dtype == .bf16)))
                         && dst.storage.device == .cuda && src.storage.device == .cuda,
                         "copy into \(dst.storage.device) \(dst.dtype) from \(src.storage.device) \(src.dtype)")
            try convert(src, into: dst.address + UInt64(dstOffset * dst.dtype.blockBytes), as: dst.dtype, count: src.count)
        }
    }

    /// Whether `first` is in an activation dtype (f32, f16 or bf16) and each other given tensor in the same.
    static func sameActivations(_ first: Tensor, _ others: Tensor?...) -> Bool {
        CUDAKernels.floatTypes.contains(first.dtype) && others.allSatisfy { $0 == nil || $0!.dtype == first.dtype }
    }

    /// Writes `count` values of `source` (any dtype) at `destination` as `dtype` (f32, or f16 or bf16
    /// rounded once).
    func convert(_ source: Tensor, into destination: DevicePointer, as dtype: DType = .f32, count: Int) throws {
        precondition(!source.dtype.isOptimizerState, "no GPU conversion of \(source.dtype) (download decodes it)")
        if source.dtype.isQuantized {
            let blocks = count / source.dtype.blockSize
            // nf4 decodes four bytes (eight values) per thread, GGUF's types a value per thread (dequantize.cu).
            let threads = source.dtype == .nf4 ? blocks * 32 : blocks * source.dtype.blockSize
            try launch(CUDAKernels.dequantize(source.dtype, to: dtype), elements: threads, [destination, source.address, Int64(blocks)])
        } else {
            try launch(CUDAKernels.cast(source.dtype, dtype), elements: count, [destination, source.address, Int64(count)])
        }
    }

    // MARK: - Launching

    /// Launches `kernel` with `arguments` (each ≤ 8 bytes: pointers, Int32, Int64, Float).
    func launch(_ kernel: KernelName, grid: (Int, Int, Int), block: (Int, Int, Int), sharedMemory: Int = 0,
                _ arguments: [any KernelArgument]) throws {
        let function = try kernels.function(kernel.file, kernel.name)
        if sharedMemory > 48 << 10 { try allowSharedMemory(function, kernel, sharedMemory) }
        var slots = arguments.map(\.kernelSlot)
        try slots.withUnsafeMutableBufferPointer { slots in
            var pointers = (0..<slots.count).map { UnsafeMutableRawPointer(slots.baseAddress! + $0) as UnsafeMutableRawPointer? }
            try pointers.withUnsafeMutableBufferPointer { parameters in
                try driver.launch(function, grid: (UInt32(grid.0), UInt32(grid.1), UInt32(grid.2)),
                                  block: (UInt32(block.0), UInt32(block.1), UInt32(block.2)), sharedMemory: sharedMemory,
                                  stream: stream, parameters: parameters.baseAddress)
            }
        }
    }

    /// Launches a grid-stride kernel over `elements` with 256 threads a block.
    func launch(_ kernel: KernelName, elements: Int, _ arguments: [any KernelArgument]) throws {
        guard elements > 0 else { return }
        let blocks = min((elements + 255) / 256, multiprocessors * 16)
        try launch(kernel, grid: (blocks, 1, 1), block: (256, 1, 1), arguments)
    }

    /// Launches a kernel with one block of 256 threads per row.
    func launch(_ kernel: KernelName, rows: Int, _ arguments: [any KernelArgument]) throws {
        guard rows > 0 else { return }
        try launch(kernel, grid: (rows, 1, 1), block: (256, 1, 1), arguments)
    }

    /// Adds column sums over `rows` rows into each non-nil output of `outputs` (+=, `columns` f32
    /// values apiece) in row splits: `kernel` (block 32×8, a block per 32 columns and split) takes
    /// one partial-sums buffer per output (null for a nil one), then `arguments`, then rows,
    /// columns and rows per split, and writes each split's sums; `column_partials_add` then adds
    /// them in split order.
    func reduceColumns(_ kernel: KernelName, rows: Int, columns: Int, into outputs: [DevicePointer?],
                       _ arguments: [any KernelArgument]) throws {
        guard columns > 0, rows > 0, outputs.contains(where: { $0 != nil }) else { return }
        let splits = min(Self.columnSplits, (rows + 127) / 128), perSplit = (rows + splits - 1) / splits
        // (outputs, splits, columns) the partial sums
        let partials = try allocate([outputs.count * splits * columns], .f32, .workspace)
        let buffers = outputs.indices.map { outputs[$0] == nil ? 0 : partials.address + UInt64($0 * splits * columns * 4) }
        try launch(kernel, grid: ((columns + 31) / 32, splits, 1), block: (32, 8, 1),
                   buffers.map { $0 as any KernelArgument } + arguments + [i32(rows), i32(columns), i32(perSplit)])
        for (output, buffer) in zip(outputs, buffers) {
            guard let output else { continue }
            try launch(CUDAKernels.columnPartialsAdd, elements: columns, [output, buffer, i32(splits), i32(columns)])
        }
    }

    /// The most row splits of a column reduction (a split of at least 128 rows).
    static let columnSplits = 64

    private func allowSharedMemory(_ function: CUDADriver.Handle, _ kernel: KernelName, _ bytes: Int) throws {
        sharedMemoryLock.lock(); defer { sharedMemoryLock.unlock() }
        let key = kernel.file + ":" + kernel.name
        if sharedMemoryConfigured[key, default: 0] >= bytes { return }
        let limit = try driver.attribute(.maxSharedMemoryPerBlockOptin, deviceHandle)
        guard bytes <= limit else {
            throw FrugalError.invalidArgument("\(kernel.name) needs \(bytes) bytes of shared memory, the GPU allows \(limit)")
        }
        try driver.setMaxDynamicSharedMemory(function, bytes: bytes)
        sharedMemoryConfigured[key] = bytes
    }
}

/// A value passed to a kernel: its bytes in an 8-byte slot (little-endian, so 4-byte values
/// read correctly from the slot's start).
protocol KernelArgument { var kernelSlot: UInt64 { get } }
extension UInt64: KernelArgument { var kernelSlot: UInt64 { self } }  // device pointers
extension Int64: KernelArgument { var kernelSlot: UInt64 { UInt64(bitPattern: self) } }
extension Int32: KernelArgument { var kernelSlot: UInt64 { UInt64(UInt32(bitPattern: self)) } }
extension Float: KernelArgument { var kernelSlot: UInt64 { UInt64(bitPattern.self) } }

extension Tensor {
    /// The device address of the first element.
    var address: DevicePointer { DevicePointer(UInt(bitPattern: rawPointer)) }
}

extension Optional where Wrapped == Tensor {
    /// The device address, or 0 (a null pointer) for nil.
    var address: DevicePointer { self?.address ?? 0 }
}

/// An `Int` dimension as a kernel's `int` argument (traps past 2³¹ − 1).
@inline(__always) func i32(_ value: Int) -> Int32 { Int32(value) }
