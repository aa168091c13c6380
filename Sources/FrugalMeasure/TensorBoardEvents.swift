// TensorBoardEvents: scalars written as TensorBoard event files, so a run can be watched with
// `tensorboard --logdir`. The format is small enough to write by hand: a file of TFRecords
// (length, masked CRC-32C, bytes, masked CRC-32C), each holding one `Event` protocol buffer —
// first the file version, then `Summary` values of (tag, float) at a step.
import Foundation
import FrugalCore

/// Appends scalar summaries to one TensorBoard event file.
public final class TensorBoardWriter {
    /// The event file (`events.out.tfevents.<seconds>.<host>.frugal`).
    public let url: URL
    private let handle: FileHandle

    /// Creates the event file in `directory` (made if missing) and writes its version record.
    public init(directory: URL, now: Date = Date()) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let host = ProcessInfo.processInfo.hostName.isEmpty ? "localhost" : ProcessInfo.processInfo.hostName
        url = directory.appendingPathComponent("events.out.tfevents.\(Int(now.timeIntervalSince1970)).\(host).frugal")
        guard FileManager.default.createFile(atPath: url.path, contents: nil) else {
            throw FrugalError.invalidArgument("\(url.path): cannot create the TensorBoard event file")
        }
        handle = try FileHandle(forWritingTo: url)
        try write(TensorBoardEvent.encode(wallTime: now.timeIntervalSince1970, step: 0, fileVersion: "brain.Event:2"))
    }

    deinit { try? handle.close() }

    /// Writes `values` (tag → value) as one event at `step`.
    public func add(_ values: [(tag: String, value: Double)], step: Int, wallTime: Date = Date()) throws {
        try write(TensorBoardEvent.encode(wallTime: wallTime.timeIntervalSince1970, step: step, scalars: values))
    }

    private func write(_ event: [UInt8]) throws {
        try handle.write(contentsOf: TensorBoardEvent.record(event))
    }
}

/// The byte layout of events and records.
public enum TensorBoardEvent {
    /// One TFRecord: little-endian length, its masked CRC-32C, the data, the data's masked CRC-32C.
    public static func record(_ data: [UInt8]) -> Data {
        var length = UInt64(data.count).littleEndian
        let lengthBytes = withUnsafeBytes(of: &length) { [UInt8]($0) }
        var out = Data(lengthBytes)
        appendLittleEndian(maskedCRC32C(lengthBytes), to: &out)
        out.append(contentsOf: data)
        appendLittleEndian(maskedCRC32C(data), to: &out)
        return out
    }

    /// An `Event`: wall_time (1, double), step (2, int64), then file_version (3, string) or a
    /// summary (5) of values with tag (1, string) and simple_value (2, float).
    public static func encode(wallTime: Double, step: Int, fileVersion: String? = nil,
                              scalars: [(tag: String, value: Double)] = []) -> [UInt8] {
        var event = [UInt8]()
        event.append(0x09)
        withUnsafeBytes(of: wallTime.bitPattern.littleEndian) { event += $0 }
        event.append(0x10)
        appendVarint(UInt64(bitPattern: Int64(step)), to: &event)
        if let fileVersion { appendField(3, Array(fileVersion.utf8), to: &event) }
        if !scalars.isEmpty {
            var summary = [UInt8]()
            for (tag, value) in scalars {
                var entry = [UInt8]()
                appendField(1, Array(tag.utf8), to: &entry)
                entry.append(0x15)
                withUnsafeBytes(of: Float(value).bitPattern.littleEndian) { entry += $0 }
                appendField(1, entry, to: &summary)
            }
            appendField(5, summary, to: &event)
        }
        return event
    }

    /// CRC-32C (Castagnoli), as TFRecord uses it.
    public static func crc32c(_ bytes: some Sequence<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        return crc ^ 0xFFFF_FFFF
    }

    /// TFRecord's masking of a CRC: rotated right by 15 bits, plus a constant.
    public static func maskedCRC32C(_ bytes: some Sequence<UInt8>) -> UInt32 {
        let crc = crc32c(bytes)
        return ((crc >> 15) | (crc << 17)) &+ 0xA282_EAD8
    }

    private static let table: [UInt32] = (0..<256).map { index in
        var crc = UInt32(index)
        for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        return crc
    }

    private static func appendVarint(_ value: UInt64, to bytes: inout [UInt8]) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    /// A length-delimited field (wire type 2).
    private static func appendField(_ number: UInt64, _ payload: [UInt8], to bytes: inout [UInt8]) {
        appendVarint(number << 3 | 2, to: &bytes)
        appendVarint(UInt64(payload.count), to: &bytes)
        bytes += payload
    }

    private static func appendLittleEndian(_ value: UInt32, to data: inout Data) {
        withUnsafeBytes(of: value.littleEndian) { data.append(contentsOf: $0) }
    }
}
