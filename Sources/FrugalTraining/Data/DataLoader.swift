// DataLoader: deterministic, resumable shuffling of token sequences into micro-batches.
import FrugalCore
import FrugalModels

/// Where a data loader is: enough to resume it exactly.
public struct DataLoaderState: Sendable, Codable, Equatable {
    /// The seed every epoch's order is drawn from.
    public var seed: UInt64
    /// The epoch of the next micro-batch, from 0.
    public var epoch: Int
    /// The index of the next micro-batch within its epoch.
    public var cursor: Int

    /// A state.
    public init(seed: UInt64, epoch: Int, cursor: Int) {
        self.seed = seed
        self.epoch = epoch
        self.cursor = cursor
    }
}

/// A micro-batch and its place in the epoch.
public struct MicroBatch: Sendable {
    /// The batch.
    public let batch: Batch
    /// Its epoch, from 0.
    public let epoch: Int
    /// Its index within the epoch.
    public let index: Int
    /// Whether it is the epoch's last micro-batch.
    public let endsEpoch: Bool
}

/// Yields micro-batches of token sequences, epoch after epoch, without end.
///
/// Each epoch visits every sequence once, in an order drawn from the seed and the epoch
/// alone (a Fisher–Yates shuffle driven by SplitMix64, so the order does not depend on the
/// Swift version), lays the sequences into rows by the strategy, and groups `batchSize` rows
/// into a micro-batch; an epoch's last micro-batch may have fewer rows. Since an epoch's plan
/// is a function of `(seed, epoch)`, `state` is all a checkpoint needs to resume exactly.
public struct DataLoader: Sendable {
    /// Rows per micro-batch.
    public let batchSize: Int
    /// How sequences are laid into rows.
    public let strategy: BatchStrategy
    /// Whether each epoch visits the sequences in a new random order (else in the given order).
    public let shuffle: Bool
    /// The token written into padding.
    public let padTokenID: Int32
    /// The position of the next micro-batch.
    public private(set) var state: DataLoaderState

    /// The sequences, cut to the strategy's row length; those without a target are left out.
    private let sequences: [TokenizedExample]
    /// The rows of `state.epoch`, as indices into `sequences`.
    private var rows: [[Int]]

    /// A loader at the start of epoch 0.
    /// - Parameters:
    ///   - sequences: Tokenized examples. Sequences longer than the strategy's row length are
    ///     cut into pieces; sequences (or pieces) with no target are left out.
    ///   - batchSize: Rows per micro-batch.
    ///   - strategy: Padding or packing.
    ///   - padTokenID: The token written into padding (masked out by targets and segments).
    ///   - shuffle: Draw a new order each epoch.
    ///   - seed: The seed of the orders.
    /// - Throws: `FrugalError.invalidArgument` for a batch size or row length below 1, or when
    ///   no sequence has a target.
    public init(sequences: [TokenizedExample], batchSize: Int, strategy: BatchStrategy,
                padTokenID: Int32 = 0, shuffle: Bool = true, seed: UInt64 = 0) throws {
        guard batchSize > 0 else { throw FrugalError.invalidArgument("batch size must be at least 1, not \(batchSize)") }
        if let length = strategy.rowLength, length < 1 {
            throw FrugalError.invalidArgument("sequence length must be at least 1, not \(length)")
        }
        let pieces = strategy.rowLength.map { length in sequences.flatMap { $0.pieces(ofLength: length) } } ?? sequences
        self.sequences = pieces.filter { $0.targetTokenCount > 0 }
        guard !self.sequences.isEmpty else {
            throw FrugalError.invalidArgument("no training sequence has a token to learn (are all replies cut off by the maximum length?)")
        }
        self.batchSize = batchSize
        self.strategy = strategy
        self.padTokenID = padTokenID
        self.shuffle = shuffle
        state = DataLoaderState(seed: seed, epoch: 0, cursor: 0)
        rows = Self.epochRows(of: self.sequences, strategy: strategy, shuffle: shuffle, seed: seed, epoch: 0)
    }

    /// Sequences the loader draws from, after cutting and leaving out those without targets.
    public var sequenceCount: Int { sequences.count }

    /// Micro-batches in the current epoch (with packing it may vary a little between epochs).
    public var batchesPerEpoch: Int { (rows.count + batchSize - 1) / batchSize }

    /// The next micro-batch; after an epoch's last one, the loader moves to the next epoch.
    public mutating func next() -> MicroBatch {
        let start = state.cursor * batchSize
        let rowGroup = rows[start..<min(start + batchSize, rows.count)]
        let rowSequences = rowGroup.map { $0.map { sequences[$0] } }
        let length = strategy.rowLength ?? rowSequences.map { $0.reduce(0) { $0 + $1.tokens.count } }.max() ?? 0
        let result = MicroBatch(batch: Batch(rows: rowSequences, length: length, padTokenID: padTokenID),
                                epoch: state.epoch, index: state.cursor, endsEpoch: state.cursor + 1 == batchesPerEpoch)
        if result.endsEpoch {
            state.epoch += 1
            state.cursor = 0
            rows = Self.epochRows(of: sequences, strategy: strategy, shuffle: shuffle, seed: state.seed, epoch: state.epoch)
        } else {
            state.cursor += 1
        }
        return result
    }

    /// Moves to a saved position (adopting its seed), so that the next micro-batches are those
    /// that followed it in the saved run.
    /// - Throws: `FrugalError.invalidArgument` when the position is not in its epoch (the
    ///   data or the batch settings differ from the saved run's).
    public mutating func resume(from saved: DataLoaderState) throws {
        let savedRows = Self.epochRows(of: sequences, strategy: strategy, shuffle: shuffle,
                                        seed: saved.seed, epoch: saved.epoch)
        guard saved.epoch >= 0, saved.cursor >= 0, saved.cursor * batchSize < savedRows.count else {
            throw FrugalError.invalidArgument(
                "cannot resume the data at epoch \(saved.epoch), micro-batch \(saved.cursor): the data or batch settings changed")
        }
        state = saved
        rows = savedRows
    }

    /// The rows of an epoch.
    private static func epochRows(of sequences: [TokenizedExample], strategy: BatchStrategy, shuffle: Bool,
                                  seed: UInt64, epoch: Int) -> [[Int]] {
        var order = Array(sequences.indices)
        if shuffle {
            var epochMixer = SplitMix64(seed: UInt64(truncatingIfNeeded: epoch))
            var random = SplitMix64(seed: seed ^ epochMixer.next())
            for high in order.indices.dropFirst().reversed() {
                let other = Int(UInt64(high + 1).multipliedFullWidth(by: random.next()).high)
                order.swapAt(high, other)
            }
        }
        return strategy.rows(order: order, lengths: sequences.map(\.tokens.count))
    }
}
