// DType: the element types a tensor can hold, including packed quantized blocks.

/// The element type of a tensor.
///
/// Float types store one value per element. Quantized types store packed blocks of `blockSize`
/// values in `blockBytes` bytes. For frozen weights: `q8_0`, `q4_0`, `q4_1`, `q4_K` and `q6_K`
/// laid out as GGUF does; `nf4` (QLoRA's NormalFloat-4 with double-quantized scales, 4.19 bits
/// per value), Frugal's own, made by quantizing on load and never read from a file
/// (`BlockQuantization` documents every layout). The `dynamic8` types hold 8-bit AdamW's
/// moments (`DynamicQuantization`), never weights, and no model file can hold them.
public enum DType: String, Sendable, Codable, CaseIterable {
    case f32, f16, bf16
    case q8_0, q4_0, q4_1, q4_K, q6_K
    case nf4
    /// bitsandbytes' blockwise dynamic 8-bit codes, signed map (AdamW's m) and unsigned map (v).
    case dynamic8, dynamic8Unsigned = "dynamic8u"

    /// Whether this is a packed block type.
    public var isQuantized: Bool {
        switch self {
        case .f32, .f16, .bf16: false
        default: true
        }
    }

    /// Whether this packed type holds optimizer state (8-bit AdamW's moments), not weights.
    public var isOptimizerState: Bool { self == .dynamic8 || self == .dynamic8Unsigned }

    /// Number of values per block (1 for float types).
    public var blockSize: Int {
        switch self {
        case .f32, .f16, .bf16: 1
        case .q8_0, .q4_0, .q4_1: 32
        case .q4_K, .q6_K, .nf4, .dynamic8, .dynamic8Unsigned: 256
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
        case .dynamic8, .dynamic8Unsigned: 260
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
