// BLAS: single-precision GEMM from OpenBLAS, loaded at run time, with a Swift fallback.
import Foundation

/// SGEMM from a BLAS library found at run time (`dlopen`), so one binary runs with or without it.
///
/// Row-major `C = alpha · op(A) · op(B) + beta · C`. When no BLAS library can be loaded, a plain
/// blocked Swift GEMM serves (correct, slower).
public struct BLAS: Sendable {
    private typealias SgemmFunction = @convention(c) (
        Int32, Int32, Int32, Int32, Int32, Int32, Float, UnsafePointer<Float>?, Int32,
        UnsafePointer<Float>?, Int32, Float, UnsafeMutablePointer<Float>?, Int32) -> Void
    private typealias SetThreadsFunction = @convention(c) (Int32) -> Void

    private let sgemmFunction: SgemmFunction?
    /// The library path that was loaded, or nil when the Swift fallback is used.
    public let libraryPath: String?

    /// Library names tried in order.
    public static let candidates = [
        "libopenblas.so.0", "libopenblas.so", "libopenblasp-r0.3.26.so",
        "/usr/lib/x86_64-linux-gnu/libopenblas.so.0", "libblas.so.3", "libcblas.so.3",
    ]

    /// Loads the first BLAS library that provides `cblas_sgemm`; `threads` sets OpenBLAS's pool.
    public init(threads: Int? = nil, searching candidates: [String] = BLAS.candidates) {
        for path in candidates {
            guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL),
                  let symbol = dlsym(handle, "cblas_sgemm") else { continue }
            sgemmFunction = unsafeBitCast(symbol, to: SgemmFunction.self)
            libraryPath = path
            if let threads, let set = dlsym(handle, "openblas_set_num_threads") {
                unsafeBitCast(set, to: SetThreadsFunction.self)(Int32(threads))
            }
            return
        }
        sgemmFunction = nil
        libraryPath = nil
    }

    /// The fallback only (for testing it against BLAS).
    public static var swiftOnly: BLAS { BLAS(searching: []) }

    /// Row-major SGEMM: `C[m,n] = alpha · Σ_k A[m,k]·B[k,n] + beta · C[m,n]` with optional transposes.
    /// - Parameters:
    ///   - transposeA: A is stored (k, m) with leading dimension `lda`.
    ///   - transposeB: B is stored (n, k) with leading dimension `ldb`.
    public func sgemm(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float,
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
        parallelChunks(m, minimumChunk: 4) { rows in
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
