// TensorBoard event files: CRC-32C against its published check value, the record framing, and
// an event file read back field by field (scripts/check_tensorboard.py reads one with
// TensorBoard's own reader).
import Foundation
import XCTest
@testable import FrugalMeasure

final class TensorBoardEventsTests: XCTestCase {
    func testCRC32CMatchesTheCastagnoliCheckValue() {
        XCTAssertEqual(TensorBoardEvent.crc32c(Array("123456789".utf8)), 0xE306_9283)
        XCTAssertEqual(TensorBoardEvent.crc32c([UInt8](repeating: 0, count: 32)), 0x8A91_36AA)
    }

    func testWrittenFileReadsBackAsRecordsOfEvents() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("tb-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let writer = try TensorBoardWriter(directory: folder, now: Date(timeIntervalSince1970: 1_700_000_000))
        try writer.add([("train/loss", 2.5), ("train/learning_rate", 1e-4)], step: 1)
        try writer.add([("train/loss", 1.25)], step: 300)
        XCTAssertTrue(writer.url.lastPathComponent.hasPrefix("events.out.tfevents.1700000000."))

        // Records: length, masked CRC of the length, data, masked CRC of the data.
        let bytes = [UInt8](try Data(contentsOf: writer.url))
        var records = [[UInt8]](), at = 0
        while at < bytes.count {
            let length = Int(bytes[at..<at + 8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
            XCTAssertEqual(le32(bytes, at + 8), TensorBoardEvent.maskedCRC32C(bytes[at..<at + 8]))
            let data = Array(bytes[at + 12..<at + 12 + length])
            XCTAssertEqual(le32(bytes, at + 12 + length), TensorBoardEvent.maskedCRC32C(data))
            records.append(data)
            at += 16 + length
        }
        XCTAssertEqual(records.count, 3)
        XCTAssertTrue(records[0].contains(subsequence: Array("brain.Event:2".utf8)))
        // Event 3: step 300 is the varint AC 02 after field 2's tag; the value's tag and float follow.
        XCTAssertEqual(Array(records[2][9..<12]), [0x10, 0xAC, 0x02])
        XCTAssertTrue(records[2].contains(subsequence: Array("train/loss".utf8) + [0x15] + le32Bytes(Float(1.25).bitPattern)))
    }

    private func le32(_ bytes: [UInt8], _ at: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[at + $1]) << (8 * $1) }
    }

    private func le32Bytes(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
}

private extension Array where Element == UInt8 {
    func contains(subsequence: [UInt8]) -> Bool {
        guard subsequence.count <= count else { return false }
        return (0...(count - subsequence.count)).contains { Array(self[$0..<$0 + subsequence.count]) == subsequence }
    }
}
