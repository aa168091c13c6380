// CPUBackend: the reference backend — OpenBLAS GEMM and multi-threaded Swift loops.
// The class, its memory and `copy` live here; each op lives in its own file (CPULinear.swift,
// CPUEmbedding.swift, CPUNorms.swift, CPURope.swift, CPUAttention.swift, CPUActivations.swift,
// CPUCrossEntropy.swift, CPUOptimizer.swift), forward beside backward; CPUActivationStorage.swift
// widens and rounds 16-bit activations for them.
import Foundation
import FrugalCore

/// The CPU implementation of `TrainingBackend`, and the reference every other backend is tested against.
///
/// GEMMs go to BLAS (loaded at run time); packed or 16-bit weights are widened a tile of rows
/// at a time into workspace, never a whole layer. Everything else is plain Swift over
/// unsafe buffers, split across cores. Arithmetic is f32: 16-bit activations are widened by
/// row or block where an op works so, else whole into workspace, and results rounded back.
public final class CPUBackend: TrainingBackend, @unchecked Sendable {
    public let device = DeviceKind.cpu
    /// The attention backward recomputes the probabilities: no statistics kept.
    public let usesAttentionStatistics = false
    public let ledger: MemoryLedger
    /// The offloaded copies, apart from `ledger`: the CPU stands in for a device whose memory is
    /// not the host's, so a test measures what offloading takes off the device.
    public let hostLedger = MemoryLedger()
    /// The GEMM provider.
    public let blas: BLAS
    /// Wall time per op, when enabled (`profile.enabled = true`).
    public let profile = OpProfile()
    /// Freed large buffers kept for reuse.
    let pages = PageCache(slackBytes: CPUBackend.pageCacheSlack)
    /// Host copies brought back ahead of their `restore`.
    private let prefetched = PrefetchTable<Tensor>()
    /// Round the gradient a GEMM reads to 16 bits wherever a GPU's tensor cores would
    /// (`sixteenBitOperandType`: 16-bit activations, no f32 weight), instead of reading it in f32:
    /// the GPU's numerics, and its 16-bit gradient paths, on the CPU. Off by default.
    public var roundsGradientOperands = false
    /// Bytes of freed buffers the backend may keep beyond its live memory.
    public static let pageCacheSlack = 32 << 20
    /// Most output rows of a packed weight widened per GEMM call.
    static let weightTileRows = 256

    /// A CPU backend; `blas` defaults to the system's OpenBLAS when it can be loaded.
    /// - Parameter ledger: where its allocations are counted (a device's `hostLedger`, for the
    ///   host memory of an offloaded optimizer).
    public init(blas: BLAS = BLAS(), ledger: MemoryLedger = MemoryLedger()) {
        self.blas = blas
        self.ledger = ledger
    }

    // MARK: - Memory

    public func zeros(_ shape: Shape, _ dtype: DType, _ category: MemoryCategory) -> Tensor {
        allocate(shape, dtype, category, zeroed: true)
    }

    /// A new tensor whose contents are unspecified, for outputs an op overwrites entirely
    /// (no memset: a reused buffer holds whatever its last owner left).
    public func empty(_ shape: Shape, _ dtype: DType, _ category: MemoryCategory) -> Tensor {
        allocate(shape, dtype, category, zeroed: false)
    }

    /// Bytes from which a buffer comes from the page cache (mapped once, reused after
    /// release) rather than from the heap.
    static let mappedBytes = 64 << 10

    private func allocate(_ shape: Shape, _ dtype: DType, _ category: MemoryCategory, zeroed: Bool) -> Tensor {
        profile.measure("allocate") {
            guard let bytes = dtype.byteCount(elements: shape.count) else {
                preconditionFailure("shape \(shape) is not a whole number of \(dtype) blocks")
            }
            let size = max(bytes, 1)
            guard ledger.fits(size) else { OutOfMemory.overBudget(ledger, device: .cpu, requested: size, category: category).stop() }
            let storage: TensorStorage
            let length = PageCache.length(for: size)
            if size >= Self.mappedBytes, let (pointer, fresh) = pages.take(length) {
                if zeroed && !fresh { memset(pointer, 0, size) }
                storage = TensorStorage(pointer: pointer, byteCount: size, category: category, device: .cpu, ledger: ledger,
                                        release: { [pages] in pages.give($0, length) })
            } else {
                var raw: UnsafeMutableRawPointer?
                guard posix_memalign(&raw, 64, size) == 0, let pointer = raw else {
                    let page = sysconf(Int32(_SC_PAGESIZE))
                    OutOfMemory(device: .cpu, requested: size, category: category,
                                free: sysconf(Int32(_SC_AVPHYS_PAGES)) * page, total: sysconf(Int32(_SC_PHYS_PAGES)) * page,
                                isBudget: false, memory: ledger.snapshot, advice: ledger.advice).stop()
                }
                if zeroed { memset(pointer, 0, size) }
                storage = TensorStorage(pointer: pointer, byteCount: size, category: category, device: .cpu,
                                        ledger: ledger, release: { free($0) })
            }
            return Tensor(storage: storage, shape: shape, dtype: dtype)
        }
    }

    /// Hands every cached free buffer back to the kernel (the backend keeps freed activation
    /// buffers for reuse, up to `pageCacheSlack` bytes beyond live memory).
    public func trimCache() { pages.trim() }

    public func upload(_ bytes: UnsafeRawBufferPointer, _ shape: Shape, _ dtype: DType,
                       _ category: MemoryCategory) -> Tensor {
        return profile.measure("upload") {
            let tensor = empty(shape, dtype, category)
            precondition(bytes.count == tensor.byteCount, "upload of \(bytes.count) bytes into \(shape) \(dtype)")
            if let base = bytes.baseAddress { tensor.rawPointer.copyMemory(from: base, byteCount: bytes.count) }
            return tensor
        }
    }

    public func download(_ tensor: Tensor) -> [Float] {
        return profile.measure("download") {
            [Float](unsafeUninitializedCapacity: tensor.count) { buffer, initialized in
                BlockQuantization.dequantize(tensor.dtype, tensor.rawPointer, buffer.baseAddress!, count: tensor.count)
                initialized = tensor.count
            }
        }
    }

    public func downloadBytes(_ tensor: Tensor) -> [UInt8] {
        [UInt8](UnsafeRawBufferPointer(start: tensor.rawPointer, count: tensor.byteCount))
    }

    /// A copy in memory of its own, counted in `hostLedger`.
    public func offload(_ tensor: Tensor, dropping: Bool) -> HostCopy {
        let bytes = tensor.byteCount, pointer = UnsafeMutableRawPointer.allocate(byteCount: max(bytes, 1), alignment: 64)
        pointer.copyMemory(from: tensor.rawPointer, byteCount: bytes)
        let storage = TensorStorage(pointer: pointer, byteCount: bytes, category: tensor.storage.category, device: .cpu,
                                    ledger: hostLedger, release: { $0.deallocate() })
        return HostCopy(storage: storage, shape: tensor.shape, dtype: tensor.dtype)
    }

    /// The tensor `prefetch` made, or a new one.
    public func restore(_ copy: HostCopy) -> Tensor {
        prefetched.take(copy) ?? upload(copy.bytes, copy.shape, copy.dtype, copy.storage.category)
    }

    /// Copies back now, as a GPU starts to, so that the ledger and `restore` behave as they do there.
    public func prefetch(_ copy: HostCopy) {
        prefetched.store(upload(copy.bytes, copy.shape, copy.dtype, copy.storage.category), for: copy)
    }

    public func upload(_ copy: HostCopy, into tensor: Tensor) {
        precondition(copy.dtype == tensor.dtype && copy.shape.count == tensor.count,
                     "upload: \(copy.shape) \(copy.dtype) into \(tensor.shape) \(tensor.dtype)")
        tensor.rawPointer.copyMemory(from: copy.storage.pointer, byteCount: tensor.byteCount)
    }

    /// Every op has finished when it returns: nothing to wait for.
    public func fence() -> DeviceFence { DeviceFence() }

    public func copy(_ dst: Tensor, at dstOffset: Int, from src: Tensor) {
        profile.measure("copy") {
            precondition(dstOffset + src.count <= dst.count, "copy: \(src.count) values at \(dstOffset) into \(dst.count)")
            if dst.dtype == src.dtype, let offset = dst.dtype.byteCount(elements: dstOffset) {
                (dst.rawPointer + offset).copyMemory(from: src.rawPointer, byteCount: src.byteCount)
                return
            }
            if (dst.dtype == .f16 || dst.dtype == .bf16) && src.dtype == .f32 {
                return narrow(src, into: dst, at: dstOffset)
            }
            precondition(dst.dtype == .f32, "copy into \(dst.dtype) from \(src.dtype)")
            BlockQuantization.dequantize(src.dtype, src.rawPointer, dst.floats.baseAddress! + dstOffset, count: src.count)
        }
    }
}
