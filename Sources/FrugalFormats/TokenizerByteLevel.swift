// TokenizerByteLevel: GPT-2's reversible map between bytes and printable Unicode scalars.

/// GPT-2's `bytes_to_unicode` table: every byte stands for a printable scalar, so byte-level
/// BPE works on text that holds no spaces or control characters, and every byte has a token.
enum ByteLevel {
    /// The scalar that stands for each byte, indexed by the byte's value.
    static let scalarForByte: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var unprintable: UInt32 = 256
        for byte in 0..<256 {
            let printable = (33...126).contains(byte) || (161...172).contains(byte) || (174...255).contains(byte)
            if printable {
                table[byte] = Unicode.Scalar(UInt8(byte))
            } else {
                table[byte] = Unicode.Scalar(unprintable)!
                unprintable += 1
            }
        }
        return table
    }()

    /// The byte each scalar stands for, indexed by the scalar's value (below 324), or -1.
    private static let byteForScalar: [Int16] = {
        var table = [Int16](repeating: -1, count: 324)
        for (byte, scalar) in scalarForByte.enumerated() {
            table[Int(scalar.value)] = Int16(byte)
        }
        return table
    }()

    /// The byte that `scalar` stands for, or nil when it is not in the table.
    static func byte(for scalar: Unicode.Scalar) -> UInt8? {
        let value = Int(scalar.value)
        guard value < byteForScalar.count, byteForScalar[value] >= 0 else { return nil }
        return UInt8(byteForScalar[value])
    }

    /// The byte-level spelling of `text`: one scalar per UTF-8 byte.
    static func encode(_ text: String) -> String {
        // Every scalar of the table is below U+0800: one or two bytes of UTF-8.
        var utf8: [UInt8] = []
        utf8.reserveCapacity(2 * text.utf8.count)
        for byte in text.utf8 {
            let value = scalarForByte[Int(byte)].value
            if value < 0x80 {
                utf8.append(UInt8(value))
            } else {
                utf8.append(0xC0 | UInt8(value >> 6))
                utf8.append(0x80 | UInt8(value & 0x3F))
            }
        }
        return String(decoding: utf8, as: UTF8.self)
    }

    /// The bytes a byte-level token spells; a token with a scalar outside the table (an added
    /// token such as `<|im_start|>` is usually inside it) stands for its own UTF-8 bytes.
    static func decode(_ token: String, into bytes: inout [UInt8]) {
        let start = bytes.count
        for scalar in token.unicodeScalars {
            guard let byte = byte(for: scalar) else {
                bytes.removeSubrange(start...)
                bytes.append(contentsOf: token.utf8)
                return
            }
            bytes.append(byte)
        }
    }
}
