// DType: the element types a tensor can hold, including packed quantized blocks.

/// The element type of a tensor.
///
/// Float types store one value per element. Quantized types store packed blocks of `blockSize`
/// values in `blockBytes` bytes, and are used for frozen weights only: `q8_0`, `q4_0`, `q4_1`,
/// `q4_K` and `q6_K` are laid out as GGUF does; `nf4` (QLoRA's NormalFloat-4 with
/// double-quantized scales, 4.19 bits per value) is Frugal's own, made by quantizing on load and
/// never read from a file (`BlockQuantization` documents every layout).
public enum DType: String, Sendable, Codable, CaseIterable {
    case f32, f16, bf16
    case q8_0, q4_0, q4_1, q4_K, q6_K
    case nf4

    /// Whether this is a packed block type.
    public var isQuantized: Bool {
        switch self {
        case .f32, .f16, .bf16: false
        default: true
        }
    }

    /// Number of values per block (1 for float types).
    public var blockSize: Int {
        switch self {
        case .f32, .f16, .bf16: 1
        case .q8_0, .q4_0, .q4_1: 32
        case .q4_K, .q6_K, .nf4: 256
        }
    }

    /// Number of bytes per block (the element size for float types).
    public var blockBytes: Int {
        switch self {
        case .f32: 4
        case .f16, .bf16: 2
        case .q8_0: 34
        case .q4_0: 18
        case .q4_1: 20
        case .q4_K: 144
        case .q6_K: 210
        case .nf4: 134
        }
    }

    /// Bytes needed for `count` elements, or nil when `count` is not a whole number of
    /// blocks or the size overflows.
    public func byteCount(elements count: Int) -> Int? {
        guard count >= 0, count % blockSize == 0 else { return nil }
        let (bytes, overflow) = (count / blockSize).multipliedReportingOverflow(by: blockBytes)
        return overflow ? nil : bytes
    }
}
