// The report's HTML page and chart rendered by a real headless browser (Chromium), and the
// screenshots checked pixel by pixel: not blank, the "X" cells styled, the chart's points drawn.
// Skipped where `chromium` is not installed (Debian package `chromium`).
import Foundation
import XCTest
import FrugalCore
@testable import FrugalMeasure

final class HTMLReportBrowserTests: XCTestCase {
    private var folder: URL!

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("browser-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        if ProcessInfo.processInfo.environment["FRUGAL_KEEP_SCREENSHOTS"] == nil { try? FileManager.default.removeItem(at: folder) }
    }

    /// The first `chromium` (or `chromium-browser`) on PATH.
    static var chromium: URL? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for directory in path.split(separator: ":") {
            for name in ["chromium", "chromium-browser"] {
                let candidate = URL(fileURLWithPath: String(directory)).appendingPathComponent(name)
                if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            }
        }
        return nil
    }

    /// Screenshots `page` with headless Chromium at `width` × `height`.
    private func screenshot(_ page: URL, width: Int, height: Int) throws -> URL {
        let browser = try XCTUnwrap(Self.chromium)
        let png = page.deletingPathExtension().appendingPathExtension("png")
        let process = Process()
        process.executableURL = browser
        process.arguments = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                             "--user-data-dir=\(folder.appendingPathComponent("profile").path)",
                             "--screenshot=\(png.path)", "--window-size=\(width),\(height)", page.absoluteString]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(120)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
        if process.isRunning { process.terminate(); XCTFail("chromium took over 120 s") }
        process.waitUntilExit()
        return png
    }

    func testTheHTMLReportRendersInAHeadlessBrowser() throws {
        try XCTSkipIf(Self.chromium == nil, "chromium is not installed (apt-get install chromium)")
        let report = try SweepReportTests.seedsReport()
        try report.write(to: folder)
        let png = try screenshot(folder.appendingPathComponent("report.html"), width: 1200, height: 900)
        let size = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: png.path)[.size] as? Int)
        XCTAssertGreaterThan(size, 20_000, "a page of tables is not a blank PNG")
        guard let image = try PNGImage(contentsOf: png) else { throw XCTSkip("PNG decoding needs libz.so.1") }
        XCTAssertEqual(image.width, 1200)
        XCTAssertEqual(image.height, 900)
        let inked = image.fraction { $0.r < 200 || $0.g < 200 || $0.b < 200 }
        XCTAssertGreaterThan(inked, 0.01, "text and borders are drawn")
        XCTAssertLessThan(inked, 0.5, "mostly a white page")
        // The out-of-memory cells' pink background (#fdecee) and the header's blue-grey (#eef3f8).
        XCTAssertGreaterThan(image.count { $0.near(0xFD, 0xEC, 0xEE) }, 2000, "X cells styled")
        XCTAssertGreaterThan(image.count { $0.near(0xEE, 0xF3, 0xF8) }, 2000, "table headers styled")
        XCTAssertGreaterThan(image.count { $0.near(0xB0, 0x00, 0x20, tolerance: 40) }, 50, "the red X glyphs")
    }

    func testTheParetoChartRendersInAHeadlessBrowser() throws {
        try XCTSkipIf(Self.chromium == nil, "chromium is not installed (apt-get install chromium)")
        let report = try SweepReportTests.seedsReport()
        try report.write(to: folder)
        let png = try screenshot(folder.appendingPathComponent("pareto-time-memory.svg"), width: 700, height: 500)
        guard let image = try PNGImage(contentsOf: png) else { throw XCTSkip("PNG decoding needs libz.so.1") }
        XCTAssertGreaterThan(image.count { $0.near(0x1F, 0x77, 0xB4, tolerance: 30) }, 150, "blue Pareto points and front")
        XCTAssertGreaterThan(image.count { $0.near(0xD6, 0x27, 0x28, tolerance: 40) }, 30, "the baseline's red ring")
    }
}

/// An 8-bit RGB or RGBA PNG decoded into pixels (a test helper: zlib is loaded at run time, since
/// the package links no compression library).
struct PNGImage {
    struct Pixel {
        var r: UInt8, g: UInt8, b: UInt8
        func near(_ r: Int, _ g: Int, _ b: Int, tolerance: Int = 6) -> Bool {
            abs(Int(self.r) - r) <= tolerance && abs(Int(self.g) - g) <= tolerance && abs(Int(self.b) - b) <= tolerance
        }
    }

    let width: Int, height: Int
    let pixels: [Pixel]

    func count(_ predicate: (Pixel) -> Bool) -> Int { pixels.reduce(0) { $0 + (predicate($1) ? 1 : 0) } }
    func fraction(_ predicate: (Pixel) -> Bool) -> Double { Double(count(predicate)) / Double(max(pixels.count, 1)) }

    private typealias Uncompress = @convention(c) (UnsafeMutablePointer<UInt8>, UnsafeMutablePointer<UInt>, UnsafePointer<UInt8>, UInt) -> Int32

    /// - Returns: nil when zlib cannot be loaded. - Throws: for a file that is not an 8-bit, non-interlaced RGB(A) PNG.
    init?(contentsOf url: URL) throws {
        guard let zlib = dlopen("libz.so.1", RTLD_NOW), let symbol = dlsym(zlib, "uncompress") else { return nil }
        let uncompress = unsafeBitCast(symbol, to: Uncompress.self)
        let bytes = [UInt8](try Data(contentsOf: url))
        func bad(_ why: String) -> Error { FrugalError.malformedFile(path: url.path, problem: why) }
        guard bytes.count > 8, bytes[0..<8] == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] else { throw bad("not a PNG") }
        func u32(_ at: Int) -> Int { bytes[at..<at + 4].reduce(0) { $0 << 8 | Int($1) } }
        var at = 8, idat = [UInt8](), header: (w: Int, h: Int, depth: UInt8, color: UInt8, interlace: UInt8)?
        while at + 12 <= bytes.count {
            let length = u32(at), type = String(decoding: bytes[at + 4..<at + 8], as: UTF8.self)
            guard at + 12 + length <= bytes.count else { throw bad("truncated chunk") }
            let data = at + 8
            if type == "IHDR" { header = (u32(data), u32(data + 4), bytes[data + 8], bytes[data + 9], bytes[data + 12]) }
            if type == "IDAT" { idat += bytes[data..<data + length] }
            if type == "IEND" { break }
            at += 12 + length
        }
        guard let h = header, h.depth == 8, h.color == 2 || h.color == 6, h.interlace == 0 else { throw bad("not 8-bit RGB(A)") }
        let channels = h.color == 6 ? 4 : 3, stride = h.w * channels
        var raw = [UInt8](repeating: 0, count: h.h * (stride + 1))
        var rawLength = UInt(raw.count)
        let status = raw.withUnsafeMutableBufferPointer { out in
            idat.withUnsafeBufferPointer { uncompress(out.baseAddress!, &rawLength, $0.baseAddress!, UInt($0.count)) }
        }
        guard status == 0, rawLength == UInt(raw.count) else { throw bad("IDAT does not inflate (zlib \(status))") }
        // Undo the per-row filters (None, Sub, Up, Average, Paeth).
        var image = [UInt8](repeating: 0, count: h.h * stride)
        for y in 0..<h.h {
            let filter = raw[y * (stride + 1)], row = y * (stride + 1) + 1
            for x in 0..<stride {
                let a = x >= channels ? Int(image[y * stride + x - channels]) : 0
                let b = y > 0 ? Int(image[(y - 1) * stride + x]) : 0
                let c = x >= channels && y > 0 ? Int(image[(y - 1) * stride + x - channels]) : 0
                let predictor: Int
                switch filter {
                case 0: predictor = 0
                case 1: predictor = a
                case 2: predictor = b
                case 3: predictor = (a + b) / 2
                case 4:
                    let p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c)
                    predictor = pa <= pb && pa <= pc ? a : pb <= pc ? b : c
                default: throw bad("unknown filter \(filter)")
                }
                image[y * stride + x] = UInt8(truncatingIfNeeded: Int(raw[row + x]) + predictor)
            }
        }
        width = h.w
        height = h.h
        pixels = (0..<h.w * h.h).map { Pixel(r: image[$0 * channels], g: image[$0 * channels + 1], b: image[$0 * channels + 2]) }
    }
}
