// BLAS: single-precision GEMM from OpenBLAS, loaded at run time, with a Swift fallback.
import Foundation

/// SGEMM from a BLAS library found at run time (`dlopen`), so one binary runs with or without it.
///
/// Row-major `C = alpha · op(A) · op(B) + beta · C`. When no BLAS library can be loaded, a plain
/// blocked Swift GEMM serves (correct, slower).
///
/// Threads: by default OpenBLAS runs single-threaded and `sgemm` splits a large product into
/// one independent block of C per worker (`workerCount`, the threads of the backend's other
/// loops). One pool of threads then serves everything: OpenBLAS's own pool would spin after
/// each call on cores the next op needs, and could not serve the small GEMMs that attention
/// issues from inside parallel loops (`sgemmSerial`).
public struct BLAS: Sendable {
    private typealias SgemmFunction = @convention(c) (
        Int32, Int32, Int32, Int32, Int32, Int32, Float, UnsafePointer<Float>?, Int32,
        UnsafePointer<Float>?, Int32, Float, UnsafeMutablePointer<Float>?, Int32) -> Void
    private typealias SetThreadsFunction = @convention(c) (Int32) -> Void

    private let sgemmFunction: SgemmFunction?
    /// The library path that was loaded, or nil when the Swift fallback is used.
    public let libraryPath: String?
    /// How many blocks `sgemm` splits a large product into (1 when BLAS threads itself).
    let splits: Int

    /// Library names tried in order.
    public static let candidates = [
        "libopenblas.so.0", "libopenblas.so", "libopenblasp-r0.3.26.so",
        "/usr/lib/x86_64-linux-gnu/libopenblas.so.0", "libblas.so.3", "libcblas.so.3",
    ]

    /// Multiply-adds below which a product is not worth splitting across threads.
    static let splitThreshold = 1 << 21

    /// Loads the first BLAS library that provides `cblas_sgemm`.
    /// - Parameter threads: nil (the default) runs OpenBLAS single-threaded and splits large
    ///   products across the backend's workers; a number hands OpenBLAS a pool of that many
    ///   threads and calls it unsplit.
    public init(threads: Int? = nil, searching candidates: [String] = BLAS.candidates) {
        for path in candidates {
            guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL),
                  let symbol = dlsym(handle, "cblas_sgemm") else { continue }
            sgemmFunction = unsafeBitCast(symbol, to: SgemmFunction.self)
            libraryPath = path
            splits = threads == nil ? workerCount : 1
            if let set = dlsym(handle, "openblas_set_num_threads") {
                unsafeBitCast(set, to: SetThreadsFunction.self)(Int32(threads ?? 1))
            }
            return
        }
        sgemmFunction = nil
        libraryPath = nil
        splits = 1
    }

    /// The fallback only (for testing it against BLAS).
    public static var swiftOnly: BLAS { BLAS(searching: []) }

    /// Row-major SGEMM: `C[m,n] = alpha · Σ_k A[m,k]·B[k,n] + beta · C[m,n]` with optional transposes.
    /// Large products are split by rows or columns of C across threads.
    /// - Parameters:
    ///   - transposeA: A is stored (k, m) with leading dimension `lda`.
    ///   - transposeB: B is stored (n, k) with leading dimension `ldb`.
    public func sgemm(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                      a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                      beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        if m == 0 || n == 0 { return }
        guard sgemmFunction != nil, splits > 1, m * n * k >= Self.splitThreshold, max(m, n) >= 32 else {
            sgemmSerial(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                        b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
            return
        }
        // Split the longer side of C into one block per worker, in multiples of 16.
        let byRows = m >= n
        let length = byRows ? m : n
        let workers = min(splits, length / 16)
        let block = ((length + workers - 1) / workers + 15) / 16 * 16
        parallelWorkers(workers) { w in
            let start = w * block, count = min(block, length - start)
            guard count > 0 else { return }
            if byRows {
                // Rows of C are rows of op(A): row i of op(A) starts at a + i·lda, or column i when transposed.
                sgemmSerial(transposeA: transposeA, transposeB: transposeB, m: count, n: n, k: k, alpha: alpha,
                            a: a + (transposeA ? start : start * lda), lda: lda, b: b, ldb: ldb, beta: beta,
                            c: c + start * ldc, ldc: ldc)
            } else {
                sgemmSerial(transposeA: transposeA, transposeB: transposeB, m: m, n: count, k: k, alpha: alpha,
                            a: a, lda: lda, b: b + (transposeB ? start * ldb : start), ldb: ldb, beta: beta,
                            c: c + start, ldc: ldc)
            }
        }
    }

    /// `sgemm` on the calling thread only: for products issued from inside a parallel loop.
    public func sgemmSerial(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                            a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                            beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        if m == 0 || n == 0 { return }
        if let sgemmFunction {
            // CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112
            sgemmFunction(101, transposeA ? 112 : 111, transposeB ? 112 : 111, Int32(m), Int32(n), Int32(k),
                          alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
            return
        }
        fallbackGEMM(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
                     a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
    }

    private func fallbackGEMM(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                              a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                              beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        parallelChunks(m, minimumChunk: max(4, (1 << 16) / max(1, n * k))) { rows in
            for i in rows {
                let row = c + i * ldc
                for j in 0..<n { row[j] = beta == 0 ? 0 : row[j] * beta }
                for p in 0..<k {
                    let aip = alpha * (transposeA ? a[p * lda + i] : a[i * lda + p])
                    if aip == 0 { continue }
                    if transposeB {
                        for j in 0..<n { row[j] += aip * b[j * ldb + p] }
                    } else {
                        let bp = b + p * ldb
                        for j in 0..<n { row[j] += aip * bp[j] }
                    }
                }
            }
        }
    }
}
