// KVCache: keys and values of past positions, one pair of buffers per block.
import FrugalCore
import FrugalFormats

/// Keys and values of the positions already seen, for decoding one token at a time.
///
/// Holds one sequence; buffers are allocated once at `capacity` positions and tagged as
/// activations.
public final class KVCache: @unchecked Sendable {
    /// (capacity, kvHeads·headDim) per block.
    let keys: [Tensor]
    let values: [Tensor]
    /// Positions filled so far.
    public private(set) var length = 0
    /// Positions it can hold.
    public let capacity: Int

    /// Allocates a cache for `capacity` positions of the decoder described by `configuration`.
    public init(backend: Backend, configuration: ModelConfiguration, capacity: Int) {
        let width = configuration.kvHeads * configuration.headDim
        keys = (0..<configuration.layers).map { _ in backend.zeros([capacity, width], .f32, .activations) }
        values = (0..<configuration.layers).map { _ in backend.zeros([capacity, width], .f32, .activations) }
        self.capacity = capacity
    }

    /// Marks `count` more positions as filled (after every block has appended them).
    func advance(by count: Int) { length += count }

    /// Forgets every position.
    public func reset() { length = 0 }
}
