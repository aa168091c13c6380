// TrainingDataset: reads a training data file (Alpaca, OpenAI messages, ShareGPT, plain text)
// into training examples, naming the file and line of any bad record.
import Foundation
import FrugalCore

/// What reading a data file found.
public struct DataLoadReport: Sendable, Equatable {
    /// Records read into examples.
    public var records: Int
    /// Bad records left out (only with `skipBadRecords`).
    public var skipped: Int
    /// The line where each left-out record starts, in file order.
    public var skippedLines: [Int]

    /// A report.
    public init(records: Int, skipped: Int, skippedLines: [Int]) {
        self.records = records
        self.skipped = skipped
        self.skippedLines = skippedLines
    }
}

/// The examples of a training data file.
public struct TrainingDataset: Sendable {
    /// The examples, in file order.
    public let examples: [TrainingExample]
    /// The format the records were read as.
    public let format: DataFormat
    /// How many records were read and which were left out.
    public let report: DataLoadReport

    /// Reads a data file.
    ///
    /// A `.txt` file is one plain text. Any other file is JSON: one array of records when it
    /// starts with `[`, otherwise JSON lines (one record per line, blank lines ignored).
    /// - Parameters:
    ///   - path: The file.
    ///   - format: The record format; nil to tell it from the fields of the first record that
    ///     parses (`messages`, `conversations`, `instruction`/`output`, `text`).
    ///   - skipBadRecords: Leave out records that are not valid JSON or lack a field, and
    ///     count them in `report`, instead of failing on the first.
    /// - Throws: `FrugalError.missingFile` when the file cannot be read;
    ///   `FrugalError.malformedFile` with a problem that starts "line N:" (the line where the
    ///   record starts) for a bad record, or when the file's structure is broken, or when it
    ///   yields no example.
    public init(contentsOf path: String, format: DataFormat? = nil, skipBadRecords: Bool = false) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw FrugalError.missingFile(path: path, what: "training data file")
        }
        if URL(fileURLWithPath: path).pathExtension.lowercased() == "txt" {
            if let format, format != .text {
                throw FrugalError.malformedFile(path: path, problem: "a .txt file can only be read as plain text, not \(format.rawValue)")
            }
            examples = [TrainingExample(text: String(decoding: data, as: UTF8.self))]
            self.format = .text
            report = DataLoadReport(records: 1, skipped: 0, skippedLines: [])
            return
        }
        var bytes = [UInt8](data)
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes.removeFirst(3) }  // a UTF-8 byte-order mark
        let records = bytes.first(where: { !JSONRecordScanner.isWhitespace($0) }) == UInt8(ascii: "[")
            ? try JSONRecordScanner.arrayElements(of: bytes, path: path)
            : JSONRecordScanner.lines(of: bytes)

        var examples: [TrainingExample] = []
        var skippedLines: [Int] = []
        var format = format
        for record in records {
            do throws(RecordProblem) {
                let object = try Self.object(record.bytes)
                guard let recordFormat = format ?? DataFormat.detect(fromFieldsOf: object) else {
                    throw RecordProblem("cannot tell the data format: no field 'instruction', 'messages', 'conversations' or 'text'")
                }
                format = recordFormat
                examples.append(try recordFormat.example(from: object))
            } catch {
                guard skipBadRecords else {
                    throw FrugalError.malformedFile(path: path, problem: "line \(record.line): \(error.message)")
                }
                skippedLines.append(record.line)
            }
        }
        guard let format, !examples.isEmpty else {
            throw FrugalError.malformedFile(path: path, problem: records.isEmpty ? "no records" : "no readable records")
        }
        self.examples = examples
        self.format = format
        report = DataLoadReport(records: examples.count, skipped: skippedLines.count, skippedLines: skippedLines)
    }

    /// A record's JSON object.
    private static func object(_ bytes: ArraySlice<UInt8>) throws(RecordProblem) -> [String: Any] {
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: Data(bytes))
        } catch {
            throw RecordProblem("not valid JSON")
        }
        guard let object = parsed as? [String: Any] else { throw RecordProblem("the record is not a JSON object") }
        return object
    }
}
