// GGUFValue: one metadata value of a GGUF file, with typed convenience accessors.

/// A GGUF metadata value, in the type the file stores it.
///
/// The accessors convert between compatible types (any integer type to `Int`, any number to
/// `Float`) and return nil when the value is of another kind or does not fit.
public enum GGUFValue: Sendable, Equatable {
    case u8(UInt8), i8(Int8), u16(UInt16), i16(Int16), u32(UInt32), i32(Int32), u64(UInt64), i64(Int64)
    case f32(Float), f64(Double)
    case bool(Bool)
    case string(String)
    /// An array; GGUF arrays hold values of one type (arrays may nest).
    case array([GGUFValue])

    /// The value as an `Int`, for any integer type whose value fits.
    public var int: Int? {
        switch self {
        case let .u8(v): Int(v)
        case let .i8(v): Int(v)
        case let .u16(v): Int(v)
        case let .i16(v): Int(v)
        case let .u32(v): Int(v)
        case let .i32(v): Int(v)
        case let .u64(v): Int(exactly: v)
        case let .i64(v): Int(exactly: v)
        default: nil
        }
    }

    /// The value as a `Float`, for floating-point values and integers (rounded to nearest).
    public var float: Float? {
        switch self {
        case let .f32(v): v
        case let .f64(v): Float(v)
        default: int.map { Float($0) }
        }
    }

    /// The value as a `Double`, for floating-point values and integers.
    public var double: Double? {
        switch self {
        case let .f32(v): Double(v)
        case let .f64(v): v
        default: int.map { Double($0) }
        }
    }

    /// The value of a `bool`.
    public var bool: Bool? {
        if case let .bool(v) = self { return v }
        return nil
    }

    /// The value of a `string`.
    public var string: String? {
        if case let .string(v) = self { return v }
        return nil
    }

    /// The elements of an `array`.
    public var array: [GGUFValue]? {
        if case let .array(v) = self { return v }
        return nil
    }

    /// The elements of an array of strings.
    public var stringArray: [String]? { elements(\.string) }

    /// The elements of an array of numbers, as floats.
    public var floatArray: [Float]? { elements(\.float) }

    /// The elements of an array of integers, as `Int`s.
    public var intArray: [Int]? { elements(\.int) }

    /// The array's elements converted by `convert`, or nil when this is not an array or an
    /// element does not convert.
    private func elements<T>(_ convert: (GGUFValue) -> T?) -> [T]? {
        guard case let .array(values) = self else { return nil }
        var result: [T] = []
        result.reserveCapacity(values.count)
        for value in values {
            guard let converted = convert(value) else { return nil }
            result.append(converted)
        }
        return result
    }
}
