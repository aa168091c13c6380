// BlockQuantization: decodes f16/bf16, GGUF's packed quantized blocks and Frugal's NF4 blocks into
// floats, and takes the dot product of a packed row with a float vector (the M = 1 inner loop).

/// Decoding of every `DType` into `Float`, laid out exactly as ggml lays out its blocks (and NF4
/// as documented below).
///
/// Block layouts (little-endian, no padding; `f16` is an IEEE half):
/// - `q8_0`: `{ f16 d; i8 qs[32] }`, value `qs[i]·d`.
/// - `q4_0`: `{ f16 d; u8 qs[16] }`, low nibbles are values 0–15, high nibbles 16–31,
///   value `(q − 8)·d`.
/// - `q4_1`: `{ f16 d; f16 m; u8 qs[16] }`, nibbles as `q4_0`, value `q·d + m`.
/// - `q4_K`: `{ f16 d; f16 dmin; u8 scales[12]; u8 qs[128] }`: 8 sub-blocks of 32 with
///   6-bit scales and mins packed in `scales` (ggml's `get_scale_min_k4`), value
///   `d·sc·q − dmin·m`.
/// - `q6_K`: `{ u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d }`: 6-bit values (4 low bits in
///   `ql`, 2 high bits in `qh`) minus 32, 16 sub-blocks of 16 with an 8-bit scale, value
///   `d·sc·q`.
/// - `nf4` (Frugal's own): `{ f16 d; u8 scales[4]; u8 qs[128] }`: 4 sub-blocks of 64, each with
///   absmax `a_j = scales[j]·d` (QLoRA's double quantization: the absmaxes quantized to 8 bits
///   against one f16 per 256 values), value `nf4Codes[q]·a_j`. Sub-block j's codes are
///   `qs[32j ..< 32j + 32]`, value `2l` in the high nibble of byte `l` and `2l + 1` in the low
///   one, as bitsandbytes packs them. Both products are rounded to f32 in that order.
/// - `dynamic8`, `dynamic8Unsigned`: 8-bit AdamW's moments, `{ f32 absmax; u8 codes[256] }`
///   (`DynamicQuantization`).
///
/// Results are bit-identical to ggml's reference `dequantize_row_*` (the products are
/// rounded in the same order). Sources may be unaligned.
public enum BlockQuantization {
    /// Decodes `count` elements of `dtype` at `source` into `destination`.
    ///
    /// - Parameters:
    ///   - dtype: the element type of the source bytes.
    ///   - source: `dtype.byteCount(elements: count)` readable bytes, any alignment.
    ///   - destination: room for `count` floats; must not overlap `source`.
    ///   - count: number of elements, a multiple of `dtype.blockSize`.
    public static func dequantize(_ dtype: DType, _ source: UnsafeRawPointer,
                                  _ destination: UnsafeMutablePointer<Float>, count: Int) {
        precondition(count >= 0 && count % dtype.blockSize == 0,
                     "dequantize: \(count) elements is not a whole number of \(dtype.rawValue) blocks")
        let blocks = count / dtype.blockSize
        let stride = dtype.blockBytes
        switch dtype {
        case .f32:
            UnsafeMutableRawPointer(destination).copyMemory(from: source, byteCount: count * 4)
        case .f16:
            for i in 0..<count {
                destination[i] = halfToFloat(source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
            }
        case .bf16:
            for i in 0..<count {
                let bits = UInt32(source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                destination[i] = Float(bitPattern: bits << 16)
            }
        case .q8_0:
            for b in 0..<blocks { decodeQ8_0(source + b * stride, destination + b * 32) }
        case .q4_0:
            for b in 0..<blocks { decodeQ4_0(source + b * stride, destination + b * 32) }
        case .q4_1:
            for b in 0..<blocks { decodeQ4_1(source + b * stride, destination + b * 32) }
        case .q4_K:
            for b in 0..<blocks { decodeQ4_K(source + b * stride, destination + b * 256) }
        case .q6_K:
            for b in 0..<blocks { decodeQ6_K(source + b * stride, destination + b * 256) }
        case .nf4:
            for b in 0..<blocks { decodeNF4(source + b * stride, destination + b * 256) }
        case .dynamic8, .dynamic8Unsigned:
            DynamicQuantization.dequantize(dtype, source, destination, blocks: blocks)
        }
    }

    /// The 16 values of NormalFloat-4 (QLoRA, appendix E), exactly bitsandbytes' `nf4` code
    /// book: quantiles of a standard normal scaled to [−1, 1], with an exact zero at code 7.
    public static let nf4Codes = SIMD16<Float>(
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
        -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
        0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
        0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0)

    /// The dot product `Σ_i row[i]·x[i]` of a packed row with a float vector, without
    /// materializing the row: q8_0, q4_0 and q4_1 blocks go through `prepareDot` and
    /// `dotPrepared`; other packed types are decoded 256 values at a time on the stack.
    ///
    /// - Parameters:
    ///   - dtype: the element type of `row`.
    ///   - row: `dtype.byteCount(elements: count)` readable bytes, any alignment.
    ///   - x: `count` floats.
    ///   - count: number of elements, a multiple of `dtype.blockSize`.
    /// - Returns: the sum, accumulated in f32 lanes, then summed.
    public static func dot(_ dtype: DType, _ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, count: Int) -> Float {
        precondition(count >= 0 && count % dtype.blockSize == 0,
                     "dot: \(count) elements is not a whole number of \(dtype.rawValue) blocks")
        if dtype == .f32 { return dotF32(row, UnsafeRawPointer(x), count: count) }
        if hasPreparedDot(dtype) {
            return withUnsafeTemporaryAllocation(of: Float.self, capacity: preparedCount(dtype, count: count)) { prepared in
                prepareDot(dtype, x, count: count, into: prepared.baseAddress!)
                return dotPrepared(dtype, row, prepared.baseAddress!, count: count)
            }
        }
        let chunk = 256  // a multiple of every block size
        return withUnsafeTemporaryAllocation(of: Float.self, capacity: chunk) { scratch in
            let values = scratch.baseAddress!
            var sum: Float = 0
            var done = 0
            while done < count {
                let n = min(chunk, count - done)
                dequantize(dtype, row + done / dtype.blockSize * dtype.blockBytes, values, count: n)
                sum += dotF32(UnsafeRawPointer(values), UnsafeRawPointer(x + done), count: n)
                done += n
            }
            return sum
        }
    }

    // MARK: - Fused dot products of blocks of 32

    /// Whether `prepareDot` and `dotPrepared` handle `dtype` (q8_0, q4_0, q4_1).
    public static func hasPreparedDot(_ dtype: DType) -> Bool {
        dtype == .q8_0 || dtype == .q4_0 || dtype == .q4_1
    }

    /// Floats `prepareDot` writes for a vector of `count` values.
    public static func preparedCount(_ dtype: DType, count: Int) -> Int {
        dtype == .q4_1 ? count + count / 32 : count
    }

    /// Lays out `x` for `dotPrepared` against rows of `dtype`: within each block of 32, value
    /// `4j + t` goes to position `8t + j`; then, for q4_1, each block's `Σ x` (what its offset
    /// `m` multiplies).
    ///
    /// That is the order in which the kernels unpack a block without shuffles: its bytes read
    /// as 32-bit words, byte t of word j holds value 4j + t (and, for q4, its high nibble value
    /// 16 + 4j + t), so one shift and mask per t gives a group of lanes. A vector is prepared
    /// once and dotted with every row of a weight (decoding).
    public static func prepareDot(_ dtype: DType, _ x: UnsafePointer<Float>, count: Int,
                                  into prepared: UnsafeMutablePointer<Float>) {
        precondition(hasPreparedDot(dtype) && count % 32 == 0, "prepareDot: \(dtype.rawValue) × \(count)")
        for b in stride(from: 0, to: count, by: 32) {
            for t in 0..<4 { for j in 0..<8 { prepared[b + 8 * t + j] = x[b + 4 * j + t] } }
        }
        if dtype == .q4_1 {
            for b in 0..<(count / 32) {
                var sum: Float = 0
                for i in 0..<32 { sum += x[32 * b + i] }
                prepared[count + b] = sum
            }
        }
    }

    /// `Σ_i row[i]·x[i]` with `x` laid out by `prepareDot`; each block's bytes are unpacked in
    /// registers (shifts and masks of 32-bit words) and multiplied at once: `d·Σ q·x` per block,
    /// plus `m·Σ x` for q4_1.
    public static func dotPrepared(_ dtype: DType, _ row: UnsafeRawPointer, _ prepared: UnsafePointer<Float>,
                                   count: Int) -> Float {
        switch dtype {
        case .q8_0: return dotQ8_0(row, prepared, blocks: count / 32)
        case .q4_0: return dotQ4(row, prepared, blocks: count / 32, blockBytes: 18, offset: 8, sums: nil)
        case .q4_1: return dotQ4(row, prepared, blocks: count / 32, blockBytes: 20, offset: 0, sums: prepared + count)
        default: preconditionFailure("dotPrepared: \(dtype.rawValue) has no prepared dot")
        }
    }

    @inline(__always)
    private static func load4(_ p: UnsafePointer<Float>, _ i: Int) -> SIMD4<Float> {
        UnsafeRawPointer(p + i).loadUnaligned(as: SIMD4<Float>.self)
    }

    /// q8_0: 8 words of 4 signed bytes; byte t of each word, sign-extended, is group t.
    private static func dotQ8_0(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, blocks: Int) -> Float {
        var acc0 = SIMD4<Float>(), acc1 = SIMD4<Float>()
        for b in 0..<blocks {
            let block = row + 34 * b, xb = x + 32 * b
            let w0 = block.loadUnaligned(fromByteOffset: 2, as: SIMD4<Int32>.self)
            let w1 = block.loadUnaligned(fromByteOffset: 18, as: SIMD4<Int32>.self)
            var s0 = SIMD4<Float>(), s1 = SIMD4<Float>()
            s0 += SIMD4<Float>((w0 &<< 24) &>> 24) * load4(xb, 0)
            s1 += SIMD4<Float>((w1 &<< 24) &>> 24) * load4(xb, 4)
            s0 += SIMD4<Float>((w0 &<< 16) &>> 24) * load4(xb, 8)
            s1 += SIMD4<Float>((w1 &<< 16) &>> 24) * load4(xb, 12)
            s0 += SIMD4<Float>((w0 &<< 8) &>> 24) * load4(xb, 16)
            s1 += SIMD4<Float>((w1 &<< 8) &>> 24) * load4(xb, 20)
            s0 += SIMD4<Float>(w0 &>> 24) * load4(xb, 24)
            s1 += SIMD4<Float>(w1 &>> 24) * load4(xb, 28)
            let d = half(block, 0)
            acc0 += s0 * d
            acc1 += s1 * d
        }
        return (acc0 + acc1).sum()
    }

    /// q4_0 and q4_1: 4 words of 16 bytes; nibble pairs of byte t of each word are groups
    /// (t, low) and (t, high). Values are `q − offset`; with `sums`, each block adds `m·Σx`.
    @inline(__always)
    private static func dotQ4(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, blocks: Int, blockBytes: Int,
                              offset: Float, sums: UnsafePointer<Float>?) -> Float {
        var acc0 = SIMD4<Float>(), acc1 = SIMD4<Float>(), offsets: Float = 0
        let bytesAt = sums == nil ? 2 : 4
        for b in 0..<blocks {
            let block = row + blockBytes * b, xb = x + 32 * b
            let w = block.loadUnaligned(fromByteOffset: bytesAt, as: SIMD4<Int32>.self)
            let mask = SIMD4<Int32>(repeating: 0x0F)
            var s0 = SIMD4<Float>(), s1 = SIMD4<Float>()
            s0 += (SIMD4<Float>(w & mask) - offset) * load4(xb, 0)
            s1 += (SIMD4<Float>((w &>> 4) & mask) - offset) * load4(xb, 4)
            s0 += (SIMD4<Float>((w &>> 8) & mask) - offset) * load4(xb, 8)
            s1 += (SIMD4<Float>((w &>> 12) & mask) - offset) * load4(xb, 12)
            s0 += (SIMD4<Float>((w &>> 16) & mask) - offset) * load4(xb, 16)
            s1 += (SIMD4<Float>((w &>> 20) & mask) - offset) * load4(xb, 20)
            s0 += (SIMD4<Float>((w &>> 24) & mask) - offset) * load4(xb, 24)
            s1 += (SIMD4<Float>((w &>> 28) & mask) - offset) * load4(xb, 28)
            let d = half(block, 0)
            acc0 += s0 * d
            acc1 += s1 * d
            if let sums { offsets += half(block, 2) * sums[b] }
        }
        return (acc0 + acc1).sum() + offsets
    }

    // MARK: - Float vectors

    /// Dot product of two f32 vectors at any alignment, eight lanes at a time.
    @inline(__always)
    private static func dotF32(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, count: Int) -> Float {
        var lanes = SIMD8<Float>()
        var i = 0
        while i + 8 <= count {
            lanes += a.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
                * b.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
            i += 8
        }
        var sum = lanes.sum()
        while i < count {
            sum += a.loadUnaligned(fromByteOffset: 4 * i, as: Float.self)
                * b.loadUnaligned(fromByteOffset: 4 * i, as: Float.self)
            i += 1
        }
        return sum
    }

    /// IEEE half bits to float, exactly, with integer and multiply steps that vectorize
    /// (the library conversion is a function call per value on x86-64 without F16C).
    @inline(__always)
    private static func halfToFloat(_ bits: UInt16) -> Float {
        let h = UInt32(bits)
        let magnitude = (h & 0x7FFF) << 13
        // Rebias the exponent by 2^(127-15); subnormal halves become normal floats exactly.
        var value = Float(bitPattern: magnitude) * Float(bitPattern: 0x7780_0000)
        if magnitude >= 0x0F80_0000 { value = Float(bitPattern: magnitude | 0x7F80_0000) }  // inf, NaN
        return Float(bitPattern: value.bitPattern | ((h & 0x8000) << 16))
    }

    /// The f16 field at `offset` of a block, as a float.
    @inline(__always)
    private static func half(_ block: UnsafeRawPointer, _ offset: Int) -> Float {
        halfToFloat(block.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    // MARK: - Blocks of 32

    /// `{ f16 d; i8 qs[32] }` → 32 values `qs[i]·d`.
    @inline(__always)
    private static func decodeQ8_0(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(block, 0)
        for i in 0..<32 {
            y[i] = Float(block.loadUnaligned(fromByteOffset: 2 + i, as: Int8.self)) * d
        }
    }

    /// `{ f16 d; u8 qs[16] }` → 32 values `(q − 8)·d`, low nibbles first.
    @inline(__always)
    private static func decodeQ4_0(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(block, 0)
        for i in 0..<16 {
            let q = Int32(block.loadUnaligned(fromByteOffset: 2 + i, as: UInt8.self))
            y[i] = Float((q & 0x0F) &- 8) * d
            y[i + 16] = Float((q >> 4) &- 8) * d
        }
    }

    /// `{ f16 d; f16 m; u8 qs[16] }` → 32 values `q·d + m`, low nibbles first.
    @inline(__always)
    private static func decodeQ4_1(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(block, 0)
        let m = half(block, 2)
        for i in 0..<16 {
            let q = Int32(block.loadUnaligned(fromByteOffset: 4 + i, as: UInt8.self))
            y[i] = Float(q & 0x0F) * d + m
            y[i + 16] = Float(q >> 4) * d + m
        }
    }

    // MARK: - Super-blocks of 256

    /// `{ f16 d; f16 dmin; u8 scales[12]; u8 qs[128] }` → 256 values `d·sc·q − dmin·m`.
    ///
    /// Each 64 values share 32 bytes of `qs`: low nibbles are the first 32, high nibbles
    /// the next 32, each half with its own 6-bit scale and min.
    @inline(__always)
    private static func decodeQ4_K(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(block, 0)
        let dmin = half(block, 2)
        let scales = block + 4
        let qs = block + 16
        for j in 0..<4 {
            let (sc1, m1) = scaleMinK4(2 * j, scales)
            let (sc2, m2) = scaleMinK4(2 * j + 1, scales)
            let d1 = d * Float(sc1), min1 = dmin * Float(m1)
            let d2 = d * Float(sc2), min2 = dmin * Float(m2)
            let q = qs + 32 * j
            let out = y + 64 * j
            for l in 0..<32 {
                let byte = Int32(q.loadUnaligned(fromByteOffset: l, as: UInt8.self))
                out[l] = d1 * Float(byte & 0x0F) - min1
                out[l + 32] = d2 * Float(byte >> 4) - min2
            }
        }
    }

    /// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` (0..<8) from the
    /// 12 packed bytes. Sub-blocks 0–3 use the low 6 bits of bytes j and j+4; 4–7 take their
    /// low 4 bits from byte j+4 and their high 2 bits from the top of bytes j−4 and j.
    @inline(__always)
    private static func scaleMinK4(_ j: Int, _ q: UnsafeRawPointer) -> (scale: Int32, min: Int32) {
        func byte(_ k: Int) -> Int32 { Int32(q.loadUnaligned(fromByteOffset: k, as: UInt8.self)) }
        if j < 4 {
            return (byte(j) & 63, byte(j + 4) & 63)
        }
        return ((byte(j + 4) & 0x0F) | ((byte(j - 4) >> 6) << 4),
                (byte(j + 4) >> 4) | ((byte(j) >> 6) << 4))
    }

    /// `{ u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d }` → 256 values `d·sc·(q − 32)`.
    ///
    /// Each 128 values use 64 bytes of `ql`, 32 of `qh` and 8 scales: value `l + 32·k`
    /// (k = 0..<4) takes its low 4 bits from `ql[l]` (k even) or `ql[l + 32]` (k odd), low or
    /// high nibble for k < 2 or k ≥ 2, and its high 2 bits from `qh[l] >> 2k`.
    @inline(__always)
    private static func decodeQ6_K(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(block, 208)
        for half128 in 0..<2 {
            let ql = block + 64 * half128
            let qh = block + 128 + 32 * half128
            let sc = block + 192 + 8 * half128
            let out = y + 128 * half128
            for part in 0..<2 {
                func scale(_ k: Int) -> Float {
                    d * Float(sc.loadUnaligned(fromByteOffset: part + 2 * k, as: Int8.self))
                }
                let s1 = scale(0), s2 = scale(1), s3 = scale(2), s4 = scale(3)
                for l in 16 * part..<16 * part + 16 {
                    let low = Int32(ql.loadUnaligned(fromByteOffset: l, as: UInt8.self))
                    let low32 = Int32(ql.loadUnaligned(fromByteOffset: l + 32, as: UInt8.self))
                    let high = Int32(qh.loadUnaligned(fromByteOffset: l, as: UInt8.self))
                    out[l] = s1 * Float(((low & 0x0F) | ((high & 3) << 4)) &- 32)
                    out[l + 32] = s2 * Float(((low32 & 0x0F) | (((high >> 2) & 3) << 4)) &- 32)
                    out[l + 64] = s3 * Float(((low >> 4) | (((high >> 4) & 3) << 4)) &- 32)
                    out[l + 96] = s4 * Float(((low32 >> 4) | (((high >> 6) & 3) << 4)) &- 32)
                }
            }
        }
    }

    /// `{ f16 d; u8 scales[4]; u8 qs[128] }` → 256 values `nf4Codes[q]·(scales[j]·d)`, each byte
    /// two values of its sub-block, the first in the high nibble.
    @inline(__always)
    private static func decodeNF4(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(block, 0), codes = nf4Codes
        for j in 0..<4 {
            let absmax = Float(block.loadUnaligned(fromByteOffset: 2 + j, as: UInt8.self)) * d
            let qs = block + 6 + 32 * j
            let out = y + 64 * j
            for l in 0..<32 {
                let byte = Int(qs.loadUnaligned(fromByteOffset: l, as: UInt8.self))
                out[2 * l] = codes[byte >> 4] * absmax
                out[2 * l + 1] = codes[byte & 0x0F] * absmax
            }
        }
    }
}
