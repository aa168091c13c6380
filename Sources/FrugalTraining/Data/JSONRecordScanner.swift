// JSONRecordScanner: splits a JSON-array or JSON-lines file into records, each with the line
// it starts on, so that a bad record can be named by its line.
import FrugalCore

/// The bytes of one record and the 1-based line of the file where it starts.
struct SourceRecord {
    let line: Int
    let bytes: ArraySlice<UInt8>
}

/// Splits JSON data files into records without parsing them: each record is then parsed on
/// its own, so one malformed record does not hide the others.
enum JSONRecordScanner {
    private static let newline = UInt8(ascii: "\n")

    /// The non-blank lines of a JSON-lines file.
    static func lines(of bytes: [UInt8]) -> [SourceRecord] {
        var records: [SourceRecord] = []
        var line = 1
        var start = bytes.startIndex
        for index in bytes.indices where bytes[index] == newline {
            appendLine(bytes[start..<index], line: line, to: &records)
            line += 1
            start = index + 1
        }
        appendLine(bytes[start...], line: line, to: &records)
        return records
    }

    private static func appendLine(_ slice: ArraySlice<UInt8>, line: Int, to records: inout [SourceRecord]) {
        if slice.contains(where: { !isWhitespace($0) }) { records.append(SourceRecord(line: line, bytes: slice)) }
    }

    /// The elements of a file holding one top-level JSON array.
    ///
    /// Elements are found by bracket depth, outside strings; their JSON is not checked here.
    /// - Throws: `FrugalError.malformedFile` naming the line when the file is not an array,
    ///   the array is not closed, or text follows it.
    static func arrayElements(of bytes: [UInt8], path: String) throws -> [SourceRecord] {
        var scanner = Cursor(bytes: bytes)
        scanner.skipWhitespace()
        guard scanner.peek == UInt8(ascii: "[") else {
            throw scanner.error(path, "expected a JSON array or JSON lines")
        }
        scanner.advance()
        scanner.skipWhitespace()
        var records: [SourceRecord] = []
        if scanner.peek == UInt8(ascii: "]") {
            scanner.advance()
        } else {
            while true {
                scanner.skipWhitespace()
                let line = scanner.line
                let element = scanner.scanElement()
                guard let terminator = scanner.peek else {
                    throw FrugalError.malformedFile(path: path, problem: "line \(line): the JSON array is not closed")
                }
                records.append(SourceRecord(line: line, bytes: element))
                scanner.advance()
                if terminator == UInt8(ascii: "]") { break }
            }
        }
        scanner.skipWhitespace()
        if scanner.peek != nil { throw scanner.error(path, "unexpected text after the JSON array") }
        return records
    }

    static func isWhitespace(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09
    }

    /// A position in the file and its line number.
    private struct Cursor {
        let bytes: [UInt8]
        var index = 0
        var line = 1

        var peek: UInt8? { index < bytes.count ? bytes[index] : nil }

        mutating func advance() {
            if bytes[index] == JSONRecordScanner.newline { line += 1 }
            index += 1
        }

        mutating func skipWhitespace() {
            while let byte = peek, JSONRecordScanner.isWhitespace(byte) { advance() }
        }

        /// Scans up to the `,` or `]` that ends an array element at depth zero, or to the end
        /// of the file; returns the element's bytes.
        mutating func scanElement() -> ArraySlice<UInt8> {
            let start = index
            var depth = 0
            var inString = false
            var escaped = false
            while let byte = peek {
                if inString {
                    if escaped {
                        escaped = false
                    } else if byte == UInt8(ascii: "\\") {
                        escaped = true
                    } else if byte == UInt8(ascii: "\"") {
                        inString = false
                    }
                } else {
                    switch byte {
                    case UInt8(ascii: "\""): inString = true
                    case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
                    case UInt8(ascii: "}"):
                        depth = max(depth - 1, 0)
                    case UInt8(ascii: "]"):
                        if depth == 0 { return bytes[start..<index] }
                        depth -= 1
                    case UInt8(ascii: ","):
                        if depth == 0 { return bytes[start..<index] }
                    default: break
                    }
                }
                advance()
            }
            return bytes[start..<index]
        }

        func error(_ path: String, _ problem: String) -> FrugalError {
            .malformedFile(path: path, problem: "line \(line): \(problem)")
        }
    }
}
