// BlockQuantization: decodes f16/bf16 and GGUF's packed quantized blocks into floats, and
// takes the dot product of a packed row with a float vector (the M = 1 inner loop).

/// Decoding of every `DType` into `Float`, laid out exactly as ggml lays out its blocks.
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
        }
    }

    /// The dot product `Σ_i row[i]·x[i]` of a packed row with a float vector, without
    /// materializing the row: q8_0, q4_0 and q4_1 blocks are decoded in registers and
    /// multiplied at once (`d·Σ q·x (+ m·Σ x)` per block); other packed types are decoded 256
    /// values at a time on the stack.
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
        switch dtype {
        case .f32: return dotF32(row, UnsafeRawPointer(x), count: count)
        case .q8_0: return dotQ8_0(row, x, blocks: count / 32)
        case .q4_0: return dotQ4_0(row, x, blocks: count / 32)
        case .q4_1: return dotQ4_1(row, x, blocks: count / 32)
        default: break
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

    /// The 32 floats of `x` that block `b` multiplies, as two halves of 16.
    @inline(__always)
    private static func xHalves(_ x: UnsafePointer<Float>, _ b: Int) -> (SIMD16<Float>, SIMD16<Float>) {
        let p = UnsafeRawPointer(x + 32 * b)
        return (p.loadUnaligned(as: SIMD16<Float>.self), p.loadUnaligned(fromByteOffset: 64, as: SIMD16<Float>.self))
    }

    /// The low and high nibbles of 16 bytes as floats: values 0–15 and 16–31 of a q4 block.
    @inline(__always)
    private static func nibbles(_ bytes: SIMD16<UInt8>) -> (SIMD16<Float>, SIMD16<Float>) {
        (SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: bytes & 0x0F)),
         SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: bytes &>> 4)))
    }

    /// `Σ_b d_b · Σ_i qs_i·x_i` over q8_0 blocks.
    private static func dotQ8_0(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, blocks: Int) -> Float {
        var acc = SIMD16<Float>()
        for b in 0..<blocks {
            let block = row + 34 * b
            let q = block.loadUnaligned(fromByteOffset: 2, as: SIMD32<Int8>.self)
            let q0 = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q.lowHalf))
            let q1 = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q.highHalf))
            let (x0, x1) = xHalves(x, b)
            acc += (q0 * x0 + q1 * x1) * half(block, 0)
        }
        return acc.sum()
    }

    /// `Σ_b d_b · Σ_i (q_i − 8)·x_i` over q4_0 blocks.
    private static func dotQ4_0(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, blocks: Int) -> Float {
        var acc = SIMD16<Float>()
        for b in 0..<blocks {
            let block = row + 18 * b
            let (lo, hi) = nibbles(block.loadUnaligned(fromByteOffset: 2, as: SIMD16<UInt8>.self))
            let (x0, x1) = xHalves(x, b)
            acc += ((lo - 8) * x0 + (hi - 8) * x1) * half(block, 0)
        }
        return acc.sum()
    }

    /// `Σ_b (d_b · Σ_i q_i·x_i + m_b · Σ_i x_i)` over q4_1 blocks.
    private static func dotQ4_1(_ row: UnsafeRawPointer, _ x: UnsafePointer<Float>, blocks: Int) -> Float {
        var acc = SIMD16<Float>(), offsets = SIMD16<Float>()
        for b in 0..<blocks {
            let block = row + 20 * b
            let (lo, hi) = nibbles(block.loadUnaligned(fromByteOffset: 4, as: SIMD16<UInt8>.self))
            let (x0, x1) = xHalves(x, b)
            acc += (lo * x0 + hi * x1) * half(block, 0)
            offsets += (x0 + x1) * half(block, 2)
        }
        return acc.sum() + offsets.sum()
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
        let q = block.loadUnaligned(fromByteOffset: 2, as: SIMD32<Int8>.self)
        store(SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q.lowHalf)) * d, y)
        store(SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q.highHalf)) * d, y + 16)
    }

    /// `{ f16 d; u8 qs[16] }` → 32 values `(q − 8)·d`, low nibbles first.
    @inline(__always)
    private static func decodeQ4_0(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(block, 0)
        let (lo, hi) = nibbles(block.loadUnaligned(fromByteOffset: 2, as: SIMD16<UInt8>.self))
        store((lo - 8) * d, y)
        store((hi - 8) * d, y + 16)
    }

    /// `{ f16 d; f16 m; u8 qs[16] }` → 32 values `q·d + m`, low nibbles first.
    @inline(__always)
    private static func decodeQ4_1(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(block, 0)
        let m = half(block, 2)
        let (lo, hi) = nibbles(block.loadUnaligned(fromByteOffset: 4, as: SIMD16<UInt8>.self))
        store(lo * d + m, y)
        store(hi * d + m, y + 16)
    }

    @inline(__always)
    private static func store(_ v: SIMD16<Float>, _ y: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(y).storeBytes(of: v, as: SIMD16<Float>.self)
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
}
