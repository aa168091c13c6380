// Parallel loops over row blocks for the CPU backend's ops.
import Foundation

/// Carries a non-Sendable value (a loop body, raw pointers) into Dispatch's worker closures.
/// Sound here because `parallelChunks` waits for every worker before it returns.
private struct Unchecked<Value>: @unchecked Sendable { let value: Value }

/// Runs `body(range)` over `0..<count` split into contiguous chunks, one per worker, and
/// returns when all are done.
/// - Parameters:
///   - count: number of items.
///   - minimumChunk: the fewest items worth a thread (small work runs inline).
func parallelChunks(_ count: Int, minimumChunk: Int = 1, _ body: (Range<Int>) -> Void) {
    let workers = min(ProcessInfo.processInfo.activeProcessorCount, max(1, count / max(1, minimumChunk)))
    if workers <= 1 || count <= 1 {
        if count > 0 { body(0..<count) }
        return
    }
    let chunk = (count + workers - 1) / workers
    withoutActuallyEscaping(body) { body in
        let work = Unchecked(value: body)
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            let start = w * chunk
            let end = min(count, start + chunk)
            if start < end { work.value(start..<end) }
        }
    }
}
