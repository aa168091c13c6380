// CuBLASLt: cuBLAS's lightweight matmul API (libcublasLt) opened at run time, with a cache of
// matmul plans (descriptors, layouts and the heuristic's algorithm) keyed by shape.
import Foundation

/// The cuBLASLt functions Frugal calls, and column-major GEMMs `D = α·op(A)·op(B) + β·C` on one stream.
///
/// Signatures and enum values follow `cublasLt.h` (CUDA 11.4 – 13): descriptor attributes
/// `COMPUTE_TYPE` 0, `SCALE_TYPE` 1, `TRANSA` 3, `TRANSB` 4, `EPILOGUE` 7, `BIAS_POINTER` 8,
/// `BIAS_DATA_TYPE` 26;
/// preference `MAX_WORKSPACE_BYTES` 1; `cublasLtMatmulHeuristicResult_t` is 96 bytes
/// (`algo` 64, `workspaceSize`, `state`, `wavesCount`, `reserved[4]`).
public final class CuBLASLt: @unchecked Sendable {
    public typealias Handle = UnsafeMutableRawPointer

    /// The library that opened, and where.
    public let library: DynamicLibrary

    private let cublasLtCreate: @convention(c) (UnsafeMutablePointer<Handle?>) -> Int32
    private let cublasLtDestroy: @convention(c) (Handle?) -> Int32
    private let cublasLtGetVersion: @convention(c) () -> Int
    private let cublasLtMatmulDescCreate: @convention(c) (UnsafeMutablePointer<Handle?>, Int32, Int32) -> Int32
    private let cublasLtMatmulDescDestroy: @convention(c) (Handle?) -> Int32
    private let cublasLtMatmulDescSetAttribute: @convention(c) (Handle?, Int32, UnsafeRawPointer, Int) -> Int32
    private let cublasLtMatrixLayoutCreate: @convention(c) (UnsafeMutablePointer<Handle?>, Int32, UInt64, UInt64, Int64) -> Int32
    private let cublasLtMatrixLayoutDestroy: @convention(c) (Handle?) -> Int32
    private let cublasLtMatrixLayoutSetAttribute: @convention(c) (Handle?, Int32, UnsafeRawPointer, Int) -> Int32
    private let cublasLtMatmulPreferenceCreate: @convention(c) (UnsafeMutablePointer<Handle?>) -> Int32
    private let cublasLtMatmulPreferenceDestroy: @convention(c) (Handle?) -> Int32
    private let cublasLtMatmulPreferenceSetAttribute: @convention(c) (Handle?, Int32, UnsafeRawPointer, Int) -> Int32
    private let cublasLtMatmulAlgoGetHeuristic: @convention(c) (Handle?, Handle?, Handle?, Handle?, Handle?, Handle?, Handle?,
                                                                Int32, UnsafeMutableRawPointer, UnsafeMutablePointer<Int32>) -> Int32
    private let cublasLtMatmul: @convention(c) (Handle?, Handle?, UnsafeRawPointer, UInt64, Handle?, UInt64, Handle?,
                                                UnsafeRawPointer, UInt64, Handle?, UInt64, Handle?, UnsafeRawPointer?,
                                                UInt64, Int, Handle?) -> Int32

    /// `cudaDataType_t` values.
    public enum DataType: Int32, Sendable { case f32 = 0, f16 = 2, bf16 = 14 }
    /// `cublasComputeType_t` values: exact f32, or f32 that may round inputs to TF32.
    public enum ComputeType: Int32, Sendable { case f32 = 68, f32FastTF32 = 77 }
    /// `cublasLtEpilogue_t` values Frugal uses.
    public enum Epilogue: Int32, Sendable { case none = 1, bias = 4 }

    static let heuristicResultBytes = 96
    static let descComputeType: Int32 = 0, descScaleType: Int32 = 1, descTransA: Int32 = 3, descTransB: Int32 = 4
    static let descEpilogue: Int32 = 7, descBiasPointer: Int32 = 8, descBiasDataType: Int32 = 26
    static let preferenceMaxWorkspace: Int32 = 1
    /// `CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT` (int32) and `_STRIDED_BATCH_OFFSET` (int64, elements).
    static let layoutBatchCount: Int32 = 5, layoutBatchStride: Int32 = 6
    /// `CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_{A,B,C,D}_BYTES` (default 256: offset views need less).
    static let preferenceAlignmentA: Int32 = 5, preferenceAlignmentB: Int32 = 6, preferenceAlignmentC: Int32 = 7,
               preferenceAlignmentD: Int32 = 8

    private var handle: Handle?

    /// Opens `libcublasLt` and creates a handle (needs a current CUDA context).
    /// - Throws: `CUDAError.libraryNotFound`, `.missingSymbol` or `.cublas`.
    public init(folders: [String] = DynamicLibrary.searchFolders()) throws {
        library = try openLibrary(["libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so.11", "libcublasLt.so"],
                                  purpose: "no cuBLASLt (CUDA's GEMM library)", folders: folders)
        let s = SymbolTable(library: library)
        cublasLtCreate = try s("cublasLtCreate")
        cublasLtDestroy = try s("cublasLtDestroy")
        cublasLtGetVersion = try s("cublasLtGetVersion")
        cublasLtMatmulDescCreate = try s("cublasLtMatmulDescCreate")
        cublasLtMatmulDescDestroy = try s("cublasLtMatmulDescDestroy")
        cublasLtMatmulDescSetAttribute = try s("cublasLtMatmulDescSetAttribute")
        cublasLtMatrixLayoutCreate = try s("cublasLtMatrixLayoutCreate")
        cublasLtMatrixLayoutDestroy = try s("cublasLtMatrixLayoutDestroy")
        cublasLtMatrixLayoutSetAttribute = try s("cublasLtMatrixLayoutSetAttribute")
        cublasLtMatmulPreferenceCreate = try s("cublasLtMatmulPreferenceCreate")
        cublasLtMatmulPreferenceDestroy = try s("cublasLtMatmulPreferenceDestroy")
        cublasLtMatmulPreferenceSetAttribute = try s("cublasLtMatmulPreferenceSetAttribute")
        cublasLtMatmulAlgoGetHeuristic = try s("cublasLtMatmulAlgoGetHeuristic")
        cublasLtMatmul = try s("cublasLtMatmul")
        var created: Handle?
        try check(cublasLtCreate(&created), "cublasLtCreate")
        handle = created
    }

    deinit {
        for plan in plans.values { destroy(plan) }
        _ = cublasLtDestroy(handle)
    }

    /// cuBLASLt's version number (e.g. 130001).
    public var version: Int { cublasLtGetVersion() }

    private func check(_ status: Int32, _ call: String) throws {
        if status != 0 { throw CUDAError.cublas(call: call, status: status) }
    }

    // MARK: - GEMM

    /// One column-major GEMM's shape: `D (m×n) = α·op(A)·op(B) + β·C`, C = D; or `batch` of
    /// them, the i-th operands `i·stride` elements after the first. A and B share a dtype; D is
    /// of it or f32 (16-bit operands run on the tensor cores with f32 compute).
    public struct Shape: Hashable, Sendable {
        public var m, n, k: Int
        public var transposeA, transposeB: Bool
        public var lda, ldb, ldd: Int
        public var typeA, typeB, typeD: DataType
        public var compute: ComputeType
        public var epilogue: Epilogue
        /// The bias epilogue's vector dtype when it is not D's (cuBLASLt's default).
        public var biasType: DataType?
        public var batch = 1
        public var strideA = 0, strideB = 0, strideD = 0

        public init(m: Int, n: Int, k: Int, transposeA: Bool, transposeB: Bool, lda: Int, ldb: Int, ldd: Int,
                    typeA: DataType = .f32, typeB: DataType = .f32, typeD: DataType = .f32,
                    compute: ComputeType = .f32, epilogue: Epilogue = .none) {
            self.m = m; self.n = n; self.k = k; self.transposeA = transposeA; self.transposeB = transposeB
            self.lda = lda; self.ldb = ldb; self.ldd = ldd; self.typeA = typeA; self.typeB = typeB; self.typeD = typeD
            self.compute = compute; self.epilogue = epilogue
        }

        /// The same GEMM over `count` operand sets spaced by the strides (elements).
        public func batched(_ count: Int, strideA: Int, strideB: Int, strideD: Int) -> Shape {
            var shape = self
            shape.batch = count; shape.strideA = strideA; shape.strideB = strideB; shape.strideD = strideD
            return shape
        }
    }

    /// A matmul descriptor, its layouts and the algorithm the heuristic chose, made once per shape.
    private struct Plan {
        var desc: Handle?, a: Handle?, b: Handle?, d: Handle?
        var algorithm: [UInt8]  // the heuristic result (96 bytes); the algo is its first 64
        var workspace: Int
    }
    /// A plan's key: the shape and the alignment (bytes, ≤ 256) of each operand's address.
    private struct PlanKey: Hashable { var shape: Shape; var a, b, d: UInt32 }
    private var plans: [PlanKey: Plan] = [:]
    /// Plans cuBLASLt refused (no algorithm for the types, e.g. a bias epilogue's), each refused again at once.
    private var refused: [PlanKey: CUDAError] = [:]

    /// The largest power of two (at most 256) that divides `address`.
    static func alignment(_ address: DevicePointer) -> UInt32 {
        address == 0 ? 256 : UInt32(min(256, 1 << address.trailingZeroBitCount))
    }
    private let lock = NSLock()

    private func destroy(_ plan: Plan) {
        _ = cublasLtMatrixLayoutDestroy(plan.a); _ = cublasLtMatrixLayoutDestroy(plan.b)
        _ = cublasLtMatrixLayoutDestroy(plan.d); _ = cublasLtMatmulDescDestroy(plan.desc)
    }

    private func setDescriptor(_ desc: Handle?, _ attribute: Int32, _ value: Int32) throws {
        var v = value
        try check(cublasLtMatmulDescSetAttribute(desc, attribute, &v, 4), "cublasLtMatmulDescSetAttribute(\(attribute))")
    }

    private func plan(_ key: PlanKey, workspaceBytes: Int) throws -> Plan {
        if let plan = plans[key] { return plan }
        let shape = key.shape
        var plan = Plan(algorithm: [UInt8](repeating: 0, count: Self.heuristicResultBytes), workspace: 0)
        try check(cublasLtMatmulDescCreate(&plan.desc, shape.compute.rawValue, DataType.f32.rawValue), "cublasLtMatmulDescCreate")
        try setDescriptor(plan.desc, Self.descTransA, shape.transposeA ? 1 : 0)
        try setDescriptor(plan.desc, Self.descTransB, shape.transposeB ? 1 : 0)
        try setDescriptor(plan.desc, Self.descEpilogue, shape.epilogue.rawValue)
        if shape.epilogue == .bias, let biasType = shape.biasType, biasType != shape.typeD {
            try setDescriptor(plan.desc, Self.descBiasDataType, biasType.rawValue)
        }
        // op(A) is m×k: A is stored k×m when transposed. op(B) is k×n: B is stored n×k when transposed.
        let (aRows, aColumns) = shape.transposeA ? (shape.k, shape.m) : (shape.m, shape.k)
        let (bRows, bColumns) = shape.transposeB ? (shape.n, shape.k) : (shape.k, shape.n)
        try check(cublasLtMatrixLayoutCreate(&plan.a, shape.typeA.rawValue, UInt64(aRows), UInt64(aColumns), Int64(shape.lda)),
                  "cublasLtMatrixLayoutCreate(A)")
        try check(cublasLtMatrixLayoutCreate(&plan.b, shape.typeB.rawValue, UInt64(bRows), UInt64(bColumns), Int64(shape.ldb)),
                  "cublasLtMatrixLayoutCreate(B)")
        try check(cublasLtMatrixLayoutCreate(&plan.d, shape.typeD.rawValue, UInt64(shape.m), UInt64(shape.n), Int64(shape.ldd)),
                  "cublasLtMatrixLayoutCreate(D)")
        if shape.batch > 1 {
            for (layout, stride) in [(plan.a, shape.strideA), (plan.b, shape.strideB), (plan.d, shape.strideD)] {
                var count = Int32(shape.batch), offset = Int64(stride)
                try check(cublasLtMatrixLayoutSetAttribute(layout, Self.layoutBatchCount, &count, 4), "set batch count")
                try check(cublasLtMatrixLayoutSetAttribute(layout, Self.layoutBatchStride, &offset, 8), "set batch stride")
            }
        }
        var preference: Handle?
        try check(cublasLtMatmulPreferenceCreate(&preference), "cublasLtMatmulPreferenceCreate")
        defer { _ = cublasLtMatmulPreferenceDestroy(preference) }
        var limit = UInt64(workspaceBytes)
        try check(cublasLtMatmulPreferenceSetAttribute(preference, Self.preferenceMaxWorkspace, &limit, 8),
                  "cublasLtMatmulPreferenceSetAttribute")
        for (attribute, value) in [(Self.preferenceAlignmentA, key.a), (Self.preferenceAlignmentB, key.b),
                                   (Self.preferenceAlignmentC, key.d), (Self.preferenceAlignmentD, key.d)] {
            var bytes = value
            try check(cublasLtMatmulPreferenceSetAttribute(preference, attribute, &bytes, 4), "cublasLtMatmulPreferenceSetAttribute(alignment)")
        }
        var found: Int32 = 0
        let status = plan.algorithm.withUnsafeMutableBytes {
            cublasLtMatmulAlgoGetHeuristic(handle, plan.desc, plan.a, plan.b, plan.d, plan.d, preference, 1, $0.baseAddress!, &found)
        }
        if status != 0 || found == 0 {
            destroy(plan)
            throw CUDAError.cublas(call: "cublasLtMatmulAlgoGetHeuristic(\(shape)) found \(found) algorithms", status: status)
        }
        plan.workspace = plan.algorithm.withUnsafeBytes { $0.load(fromByteOffset: 64, as: Int.self) }
        plans[key] = plan
        return plan
    }

    /// `D = α·op(A)·op(B) + β·D` (column-major) on `stream`, with the bias epilogue's vector when
    /// `shape.epilogue == .bias` (m values of `shape.biasType`, else of D's dtype, added to every column).
    /// - Parameters:
    ///   - workspace: device scratch of `workspaceBytes` bytes (the heuristic picks within it).
    public func matmul(_ shape: Shape, a: DevicePointer, b: DevicePointer, d: DevicePointer, alpha: Float = 1, beta: Float = 0,
                       bias: DevicePointer? = nil, workspace: DevicePointer, workspaceBytes: Int,
                       stream: CUDADriver.Handle?) throws {
        lock.lock(); defer { lock.unlock() }
        let key = PlanKey(shape: shape, a: Self.alignment(a), b: Self.alignment(b), d: Self.alignment(d))
        if let error = refused[key] { throw error }
        let plan: Plan
        do { plan = try self.plan(key, workspaceBytes: workspaceBytes) } catch let error as CUDAError {
            refused[key] = error
            throw error
        }
        if shape.epilogue == .bias {
            var pointer = bias ?? 0
            try check(cublasLtMatmulDescSetAttribute(plan.desc, Self.descBiasPointer, &pointer, 8), "set bias pointer")
        }
        var alpha = alpha, beta = beta
        let status = plan.algorithm.withUnsafeBytes { algorithm in
            cublasLtMatmul(handle, plan.desc, &alpha, a, plan.a, b, plan.b, &beta, d, plan.d, d, plan.d,
                           algorithm.baseAddress!, workspace, min(plan.workspace, workspaceBytes), stream)
        }
        try check(status, "cublasLtMatmul(\(shape))")
    }
}
