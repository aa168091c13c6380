// TokenizerPieceCache: the tokens of recently merged pieces, shared by all encoding threads.

import Foundation

/// Remembers the token ids of short pieces already merged: text repeats its words, and merging
/// is the costly step of encoding (Hugging Face `tokenizers` keeps such a cache too). When full,
/// it starts over, so memory stays bounded whatever the input.
final class PieceCache: @unchecked Sendable {
    /// Pieces longer than this many UTF-8 bytes are not cached.
    static let maximumPieceLength = 64

    private let capacity: Int
    /// Guards `entries`, which is why this class is `@unchecked Sendable`.
    private let lock = NSLock()
    private var entries: [TokenKey: [Int32]] = [:]

    /// An empty cache that holds up to `capacity` pieces.
    init(capacity: Int = 16_384) {
        self.capacity = capacity
    }

    /// The ids of `piece`, if cached.
    func ids(for piece: String) -> [Int32]? {
        guard piece.utf8.count <= Self.maximumPieceLength else { return nil }
        return lock.withLock { entries[TokenKey(text: piece)] }
    }

    /// Caches the ids of `piece` (a long piece is not cached).
    func store(_ ids: [Int32], for piece: String) {
        guard piece.utf8.count <= Self.maximumPieceLength else { return }
        lock.withLock {
            if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
            entries[TokenKey(text: piece)] = ids
        }
    }
}
