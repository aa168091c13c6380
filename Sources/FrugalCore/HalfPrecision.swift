// Conversions between Float and the 16-bit float formats stored as raw bits.

/// Float16 and bfloat16 conversions on raw 16-bit patterns (round to nearest even).
public enum HalfPrecision {
    /// The float value of IEEE binary16 bits.
    @inline(__always) public static func f16ToFloat(_ bits: UInt16) -> Float {
        Float(Float16(bitPattern: bits))
    }

    /// IEEE binary16 bits of a float, rounded to nearest even.
    @inline(__always) public static func floatToF16(_ x: Float) -> UInt16 {
        Float16(x).bitPattern
    }

    /// The float value of bfloat16 bits.
    @inline(__always) public static func bf16ToFloat(_ bits: UInt16) -> Float {
        Float(bitPattern: UInt32(bits) << 16)
    }

    /// bfloat16 bits of a float, rounded to nearest even; NaN stays NaN.
    @inline(__always) public static func floatToBF16(_ x: Float) -> UInt16 {
        let u = x.bitPattern
        if x.isNaN { return UInt16(truncatingIfNeeded: (u >> 16) | 0x40) }
        let rounding: UInt32 = 0x7FFF + ((u >> 16) & 1)
        return UInt16(truncatingIfNeeded: (u &+ rounding) >> 16)
    }

    /// Rounds a float to the nearest value representable in `dtype` (f32 is unchanged).
    @inline(__always) public static func round(_ x: Float, to dtype: DType) -> Float {
        switch dtype {
        case .f16: Float(Float16(x))
        case .bf16: bf16ToFloat(floatToBF16(x))
        default: x
        }
    }
}
