// Shape: the dimensions of a tensor, outermost first (row-major).

/// The dimensions of a tensor, outermost first; the last dimension is contiguous.
public struct Shape: Hashable, Sendable, CustomStringConvertible, ExpressibleByArrayLiteral {
    /// The dimensions, outermost first.
    public var dims: [Int]

    public init(_ dims: [Int]) { self.dims = dims }
    public init(arrayLiteral elements: Int...) { self.dims = elements }

    /// Number of elements (1 for a scalar).
    public var count: Int { dims.reduce(1, *) }
    /// Number of dimensions.
    public var rank: Int { dims.count }
    /// The innermost (contiguous) dimension.
    public var last: Int { dims.last ?? 1 }
    /// Product of all but the last dimension: the number of rows of a row-major matrix view.
    public var rows: Int { rank <= 1 ? 1 : dims.dropLast().reduce(1, *) }

    public subscript(i: Int) -> Int { dims[i] }

    public var description: String { "[" + dims.map(String.init).joined(separator: ", ") + "]" }

    /// The element count, or nil when a dimension is negative or the product overflows.
    public static func checkedCount(_ dims: [Int]) -> Int? {
        var n = 1
        for d in dims {
            guard d >= 0 else { return nil }
            let (p, o) = n.multipliedReportingOverflow(by: d)
            if o { return nil }
            n = p
        }
        return n
    }
}
