// TokenizerMergeQueue: the priority queue of candidate merges inside one BPE piece.

/// A possible merge of two neighbouring symbols of a piece.
struct MergeCandidate {
    /// Lower merges first: a merge's rank, or the negated score of the merged token.
    var priority: Double
    /// The left symbol's index; among equal priorities the leftmost merges first.
    var left: Int32
    /// The right symbol's index.
    var right: Int32
    /// The two symbols' combined length when the candidate was made (a stale candidate differs).
    var length: Int32
    /// The id of the merged token.
    var result: Int32

    /// Whether `self` merges before `other`.
    func precedes(_ other: MergeCandidate) -> Bool {
        priority != other.priority ? priority < other.priority : left < other.left
    }
}

/// A binary min-heap of merge candidates.
struct MergeQueue {
    private var heap: [MergeCandidate] = []

    /// Adds a candidate.
    mutating func push(_ candidate: MergeCandidate) {
        heap.append(candidate)
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].precedes(heap[parent]) else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    /// Removes and returns the candidate that merges first, or nil when none is left.
    mutating func pop() -> MergeCandidate? {
        guard let first = heap.first else { return nil }
        let last = heap.removeLast()
        if heap.isEmpty { return first }
        heap[0] = last
        var parent = 0
        while true {
            let left = 2 * parent + 1, right = left + 1
            var best = parent
            if left < heap.count, heap[left].precedes(heap[best]) { best = left }
            if right < heap.count, heap[right].precedes(heap[best]) { best = right }
            if best == parent { break }
            heap.swapAt(parent, best)
            parent = best
        }
        return first
    }
}
