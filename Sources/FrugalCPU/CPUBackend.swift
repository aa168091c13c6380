// CPUBackend: the reference backend — OpenBLAS GEMM and multi-threaded Swift loops.
// The class, its memory and `copy` live here; each op lives in its own file (CPULinear.swift,
// CPUEmbedding.swift, CPUNorms.swift, CPURope.swift, CPUAttention.swift, CPUActivations.swift,
// CPUCrossEntropy.swift, CPUOptimizer.swift), forward beside backward.
import Foundation
import FrugalCore

/// The CPU implementation of `TrainingBackend`, and the reference every other backend is tested against.
///
/// GEMMs go to BLAS (loaded at run time); packed or 16-bit weights are widened a tile of rows
/// at a time into workspace, never a whole layer. Everything else is plain Swift over
/// unsafe buffers, split across cores.
public final class CPUBackend: TrainingBackend, @unchecked Sendable {
    public let device = DeviceKind.cpu
    public let ledger = MemoryLedger()
    /// The GEMM provider.
    public let blas: BLAS
    /// Most output rows of a packed weight widened per GEMM call.
    static let weightTileRows = 256

    /// A CPU backend; `blas` defaults to the system's OpenBLAS when it can be loaded.
    public init(blas: BLAS = BLAS()) {
        self.blas = blas
    }

    // MARK: - Memory

    public func zeros(_ shape: Shape, _ dtype: DType, _ category: MemoryCategory) -> Tensor {
        allocate(shape, dtype, category, zeroed: true)
    }

    /// A new tensor whose contents are unspecified, for outputs an op overwrites entirely
    /// (no memset; large buffers come zeroed from the kernel anyway).
    public func empty(_ shape: Shape, _ dtype: DType, _ category: MemoryCategory) -> Tensor {
        allocate(shape, dtype, category, zeroed: false)
    }

    /// Bytes from which a buffer is mapped straight from the kernel (zero-filled pages, handed
    /// back on release) rather than taken from the heap.
    static let mappedBytes = 1 << 20
    /// Transparent huge pages: mapped buffers start on a 2 MiB boundary and ask for them, so
    /// touching a fresh 12 MiB activation faults 6 times instead of 3072.
    static let hugePageBytes = 2 << 20

    private func allocate(_ shape: Shape, _ dtype: DType, _ category: MemoryCategory, zeroed: Bool) -> Tensor {
        guard let bytes = dtype.byteCount(elements: shape.count) else {
            preconditionFailure("shape \(shape) is not a whole number of \(dtype) blocks")
        }
        let size = max(bytes, 1)
        let storage: TensorStorage
        if size >= Self.mappedBytes, let (pointer, length) = Self.mapPages(size) {
            storage = TensorStorage(pointer: pointer, byteCount: size, category: category, device: .cpu, ledger: ledger,
                                    release: { munmap($0, length) })
        } else {
            var raw: UnsafeMutableRawPointer?
            guard posix_memalign(&raw, 64, size) == 0, let pointer = raw else {
                preconditionFailure("out of host memory allocating \(size) bytes for \(category.rawValue)")
            }
            if zeroed { memset(pointer, 0, size) }
            storage = TensorStorage(pointer: pointer, byteCount: size, category: category, device: .cpu,
                                    ledger: ledger, release: { free($0) })
        }
        return Tensor(storage: storage, shape: shape, dtype: dtype)
    }

    /// Zero-filled pages for `size` bytes, starting on a huge-page boundary.
    /// - Returns: the address and the mapped length, or nil when the kernel refuses.
    private static func mapPages(_ size: Int) -> (UnsafeMutableRawPointer, Int)? {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let length = (size + page - 1) / page * page
        let reserve = length + hugePageBytes
        guard let raw = mmap(nil, reserve, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              raw != UnsafeMutableRawPointer(bitPattern: -1) else { return nil }
        // Keep the huge-page-aligned part; hand back the head and tail of the reservation.
        let address = UInt(bitPattern: raw)
        let head = Int((UInt(hugePageBytes) - address % UInt(hugePageBytes)) % UInt(hugePageBytes))
        if head > 0 { munmap(raw, head) }
        let tail = reserve - head - length
        if tail > 0 { munmap(raw + head + length, tail) }
        let pointer = raw + head
        _ = madvise(pointer, length, 14)  // MADV_HUGEPAGE; a kernel without THP ignores it
        return (pointer, length)
    }

    public func upload(_ bytes: UnsafeRawBufferPointer, _ shape: Shape, _ dtype: DType,
                       _ category: MemoryCategory) -> Tensor {
        let tensor = empty(shape, dtype, category)
        precondition(bytes.count == tensor.byteCount, "upload of \(bytes.count) bytes into \(shape) \(dtype)")
        if let base = bytes.baseAddress { tensor.rawPointer.copyMemory(from: base, byteCount: bytes.count) }
        return tensor
    }

    public func download(_ tensor: Tensor) -> [Float] {
        [Float](unsafeUninitializedCapacity: tensor.count) { buffer, initialized in
            BlockQuantization.dequantize(tensor.dtype, tensor.rawPointer, buffer.baseAddress!, count: tensor.count)
            initialized = tensor.count
        }
    }

    public func copy(_ dst: Tensor, at dstOffset: Int, from src: Tensor) {
        precondition(dstOffset + src.count <= dst.count, "copy: \(src.count) values at \(dstOffset) into \(dst.count)")
        if dst.dtype == src.dtype && !src.dtype.isQuantized {
            let size = src.dtype.blockBytes
            (dst.rawPointer + dstOffset * size).copyMemory(from: src.rawPointer, byteCount: src.byteCount)
            return
        }
        precondition(dst.dtype == .f32, "copy into \(dst.dtype) from \(src.dtype)")
        BlockQuantization.dequantize(src.dtype, src.rawPointer, dst.floats.baseAddress! + dstOffset, count: src.count)
    }
}
