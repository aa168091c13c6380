// BlockQuantizer: encodes floats as packed blocks — NF4 (QLoRA's 4-bit NormalFloat) and q8_0 —
// for a frozen base quantized on load.

extension BlockQuantization {
    /// The types `quantize` writes: `nf4` (4.19 bits per value) and `q8_0` (8.5).
    public static let quantizableTypes: [DType] = [.nf4, .q8_0]

    /// Encodes `count` floats as `dtype` blocks, so that `dequantize` returns the nearest values
    /// the format holds.
    ///
    /// - `q8_0`, ggml's `quantize_row_q8_0_ref`: `d = absmax/127` (stored as f16), each value
    ///   `round(x/d)`, halves away from zero, computed as `x·(1/d)` with the unrounded `d`.
    /// - `nf4`: `d` is the smallest f16 with `255·d ≥` the block's absmax, each sub-block's
    ///   scale the smallest byte with `scale·d ≥` its absmax (rounded up, so `|x/a_j| ≤ 1`), and
    ///   each value the code of `x/a_j` by bitsandbytes' decision points (the midpoints of
    ///   adjacent codes; a value on a midpoint takes the lower code). A sub-block whose absmax
    ///   is `scale·d` exactly keeps its ±absmax values exactly; an all-zero one is all zeros.
    ///   Magnitudes beyond `255·65504` saturate.
    ///
    /// - Parameters:
    ///   - dtype: one of `quantizableTypes`.
    ///   - source: `count` finite floats.
    ///   - destination: room for `dtype.byteCount(elements: count)` bytes, any alignment.
    ///   - count: number of elements, a multiple of `dtype.blockSize`.
    public static func quantize(_ dtype: DType, _ source: UnsafePointer<Float>, _ destination: UnsafeMutableRawPointer,
                                count: Int) {
        precondition(quantizableTypes.contains(dtype) && count >= 0 && count % dtype.blockSize == 0,
                     "quantize: \(count) values as \(dtype.rawValue)")
        for b in 0..<(count / dtype.blockSize) {
            let x = source + b * dtype.blockSize, block = destination + b * dtype.blockBytes
            if dtype == .nf4 { encodeNF4(x, block) } else { encodeQ8_0(x, block) }
        }
    }

    /// bitsandbytes' decision points between adjacent NF4 codes (`dQuantizeNF4`), ascending:
    /// a normalized value above `nf4Midpoints[i]` takes a code above `i`.
    public static let nf4Midpoints: [Float] = [
        -0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544,
        -0.23460740596055984, -0.13791173323988914, -0.045525018125772476, 0.03979014977812767,
        0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
        0.5016634166240692, 0.6427869200706482, 0.8614784181118011]

    /// The NF4 code of `x` in [−1, 1]: how many midpoints lie below it, by binary search.
    @inline(__always)
    private static func nf4Code(_ x: Float, _ midpoints: UnsafeBufferPointer<Float>) -> UInt8 {
        var code = x > midpoints[7] ? 8 : 0
        if x > midpoints[code + 3] { code += 4 }
        if x > midpoints[code + 1] { code += 2 }
        if x > midpoints[code] { code += 1 }
        return UInt8(code)
    }

    /// 256 values → `{ f16 d; u8 scales[4]; u8 qs[128] }`.
    private static func encodeNF4(_ x: UnsafePointer<Float>, _ block: UnsafeMutableRawPointer) {
        var absmax = SIMD4<Float>()
        for j in 0..<4 {
            for i in 0..<64 { absmax[j] = max(absmax[j], abs(x[64 * j + i])) }
        }
        let largest = absmax.max()
        var d = Float16(largest / 255)
        if Float(d) * 255 < largest { d = d.nextUp }
        if !d.isFinite { d = .greatestFiniteMagnitude }
        let dd = Float(d)
        block.storeBytes(of: d.bitPattern.littleEndian, toByteOffset: 0, as: UInt16.self)
        for j in 0..<4 {
            var scale: Float = 0
            if absmax[j] > 0 {
                scale = min(255, (absmax[j] / dd).rounded(.up))
                while scale < 255 && scale * dd < absmax[j] { scale += 1 }
            }
            block.storeBytes(of: UInt8(scale), toByteOffset: 2 + j, as: UInt8.self)
            let a = scale * dd  // as `dequantize` computes it
            let qs = block + 6 + 32 * j
            nf4Midpoints.withUnsafeBufferPointer { midpoints in
                for l in 0..<32 {
                    let first = a > 0 ? nf4Code(x[64 * j + 2 * l] / a, midpoints) : 7
                    let second = a > 0 ? nf4Code(x[64 * j + 2 * l + 1] / a, midpoints) : 7
                    qs.storeBytes(of: first << 4 | second, toByteOffset: l, as: UInt8.self)
                }
            }
        }
    }

    /// 32 values → `{ f16 d; i8 qs[32] }`.
    private static func encodeQ8_0(_ x: UnsafePointer<Float>, _ block: UnsafeMutableRawPointer) {
        var absmax: Float = 0
        for i in 0..<32 { absmax = max(absmax, abs(x[i])) }
        let d = absmax / 127, inverse = d != 0 ? 1 / d : 0
        block.storeBytes(of: HalfPrecision.floatToF16(d).littleEndian, toByteOffset: 0, as: UInt16.self)
        for i in 0..<32 {
            block.storeBytes(of: Int8((x[i] * inverse).rounded()), toByteOffset: 2 + i, as: Int8.self)
        }
    }
}
