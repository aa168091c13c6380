// ByteCount: byte counts read as people write them and written as people read them.
import Foundation

/// Byte counts as people write them: "3GiB", "512M", "1.5GB", "4000000".
public enum ByteCount {
    /// - Returns: the bytes, or nil when `text` is not a non-negative count with an optional unit
    ///   (B, K/KB/KiB, M/MB/MiB, G/GB/GiB, T/TB/TiB; "KB" is 1000, "K" and "KiB" are 1024).
    public static func parse(_ text: String) -> Int? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let digits = trimmed.prefix { $0.isNumber || $0 == "." }
        let unit = trimmed.dropFirst(digits.count).trimmingCharacters(in: .whitespaces).lowercased()
        guard let number = Double(digits), number >= 0 else { return nil }
        let powers: [String: Double] = ["": 1, "b": 1,
                                         "k": 0x1p10, "kib": 0x1p10, "kb": 1e3,
                                         "m": 0x1p20, "mib": 0x1p20, "mb": 1e6,
                                         "g": 0x1p30, "gib": 0x1p30, "gb": 1e9,
                                         "t": 0x1p40, "tib": 0x1p40, "tb": 1e12]
        guard let scale = powers[unit] else { return nil }
        let bytes = (number * scale).rounded()
        return bytes < 0x1p62 ? Int(bytes) : nil
    }

    /// `bytes` in binary units: "1.50 GiB", "98.30 MiB", "512 B".
    public static func describe(_ bytes: Int) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes), unit = 0
        while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
        return unit == 0 ? "\(bytes) B" : String(format: "%.2f %@", value, units[unit])
    }
}
