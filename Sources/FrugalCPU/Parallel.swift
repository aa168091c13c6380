// Parallel loops over row blocks for the CPU backend's ops, and the number of threads they use.
import Foundation

/// Carries a non-Sendable value (a loop body, raw pointers) into Dispatch's worker closures.
/// Sound here because `parallelChunks` waits for every worker before it returns.
private struct Unchecked<Value>: @unchecked Sendable { let value: Value }

/// Threads the CPU backend's loops (and its GEMM splits) use: `FRUGAL_THREADS` when set to a
/// positive number, else the active processor count. Read once.
let workerCount: Int = {
    if let text = ProcessInfo.processInfo.environment["FRUGAL_THREADS"], let n = Int(text), n > 0 { return n }
    return max(1, ProcessInfo.processInfo.activeProcessorCount)
}()

/// Runs `body(range)` over `0..<count` split into contiguous chunks, one per worker, and
/// returns when all are done.
/// - Parameters:
///   - count: number of items.
///   - minimumChunk: the fewest items worth a thread (small work runs inline).
func parallelChunks(_ count: Int, minimumChunk: Int = 1, _ body: (Range<Int>) -> Void) {
    let workers = min(workerCount, max(1, count / max(1, minimumChunk)))
    if workers <= 1 || count <= 1 {
        if count > 0 { body(0..<count) }
        return
    }
    let chunk = (count + workers - 1) / workers
    parallelWorkers(workers) { w in
        let start = w * chunk
        let end = min(count, start + chunk)
        if start < end { body(start..<end) }
    }
}

/// Runs `body(worker)` for each worker index `0..<workers` at once (the caller's thread is one of
/// them), and returns when all are done. Workers that need scratch memory index it by `worker`.
func parallelWorkers(_ workers: Int, _ body: (Int) -> Void) {
    if workers <= 1 {
        body(0)
        return
    }
    withoutActuallyEscaping(body) { body in
        let work = Unchecked(value: body)
        DispatchQueue.concurrentPerform(iterations: workers) { w in work.value(w) }
    }
}

/// Runs `body(item, worker)` over `0..<count` items with up to `workerCount` workers taking
/// items one at a time from a shared counter (for items of uneven cost), and returns when all
/// are done. `worker` (`0..<workers`) indexes per-worker scratch memory.
func parallelItems(_ count: Int, workers: Int = workerCount, _ body: (Int, Int) -> Void) {
    let workers = min(workers, count)
    if workers <= 1 {
        for item in 0..<count { body(item, 0) }
        return
    }
    let next = Counter()
    parallelWorkers(workers) { w in
        while true {
            let item = next.take()
            if item >= count { return }
            body(item, w)
        }
    }
}

/// A thread-safe counter handing out 0, 1, 2, … .
private final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0

    func take() -> Int {
        lock.lock(); defer { lock.unlock() }
        value += 1
        return value - 1
    }
}
