// BatchStrategy: how sequences are laid into the rows of a micro-batch.

/// How sequences are laid into rows.
public enum BatchStrategy: Sendable, Codable, Equatable {
    /// One sequence per row, padded to the longest sequence of the micro-batch, or to `length`
    /// when it is given (sequences longer than `length` are first cut into pieces of `length`).
    case padding(length: Int?)
    /// Sequences laid end to end in rows of `length`, each its own segment, so that rows
    /// carry little padding; sequences longer than `length` are first cut into pieces.
    case packing(length: Int)

    /// The row length sequences must fit in, when the strategy fixes one.
    var rowLength: Int? {
        switch self {
        case let .padding(length): length
        case let .packing(length): length
        }
    }

    /// Rows of sequence indices, in the given order: one sequence per row when padding;
    /// when packing, each sequence goes into the first of the most recent open rows with room
    /// for it (a window of `packingWindow` rows), else into a new row.
    /// - Parameter lengths: The token count of each sequence, each at most `rowLength`.
    func rows(order: [Int], lengths: [Int]) -> [[Int]] {
        guard case let .packing(length) = self else { return order.map { [$0] } }
        var rows: [[Int]] = []
        var used: [Int] = []
        for index in order {
            let size = lengths[index]
            if let row = (max(rows.count - Self.packingWindow, 0)..<rows.count).first(where: { used[$0] + size <= length }) {
                rows[row].append(index)
                used[row] += size
            } else {
                rows.append([index])
                used.append(size)
            }
        }
        return rows
    }

    /// How many of the latest rows packing looks into for room: enough to fill rows well,
    /// few enough to keep packing linear in the number of sequences.
    private static let packingWindow = 8
}
