// ReportTable: a table with one or more header rows (spanning cells merged) and a label column,
// rendered as aligned text, CSV or an HTML <table> — one model for every format of a report.
import Foundation

/// A titled table of strings; the first column labels the rows.
public struct ReportTable: Sendable, Equatable {
    public var title: String
    /// Header rows; in a row below the first, equal neighbours under one parent cell merge into one.
    public var header: [[String]]
    public var rows: [[String]]
    public var notes: [String]

    public init(title: String, header: [[String]], rows: [[String]], notes: [String] = []) {
        self.title = title
        self.header = header
        self.rows = rows
        self.notes = notes
    }

    /// For each header row, the (first column, width) of its merged cells, label column excluded.
    /// A cell merges with its left neighbour when their texts are equal and so are all the cells
    /// above them (so "OFF" under "GA OFF" does not merge with "OFF" under "GA ON").
    public var headerSpans: [[(start: Int, count: Int)]] {
        let columns = header.first?.count ?? 0
        var spans = [[(start: Int, count: Int)]]()
        for r in header.indices {
            var row = [(start: Int, count: Int)]()
            for c in 1..<max(columns, 1) {
                let continues = header.count > 1 && c > 1 && (0...r).allSatisfy { header[$0][c] == header[$0][c - 1] }
                if continues, !row.isEmpty { row[row.count - 1].count += 1 } else { row.append((c, 1)) }
            }
            spans.append(row)
        }
        return spans
    }

    /// Aligned columns (labels left, figures right), merged header cells written once, a rule under the header.
    public var text: String {
        let spans = headerSpans
        let shownHeader = header.indices.map { r in
            header[r].indices.map { c in c == 0 || spans[r].contains { $0.start == c } ? header[r][c] : "" }
        }
        let all = shownHeader + rows
        let columns = all.map(\.count).max() ?? 0
        let widths = (0..<columns).map { c in all.map { c < $0.count ? $0[c].count : 0 }.max() ?? 0 }
        func line(_ cells: [String]) -> String {
            (0..<columns).map { c in
                let cell = c < cells.count ? cells[c] : ""
                let pad = String(repeating: " ", count: widths[c] - cell.count)
                return c == 0 ? cell + pad : pad + cell
            }.joined(separator: "  ").replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression)
        }
        let rule = widths.map { String(repeating: "─", count: $0) }.joined(separator: "  ")
        var lines = [title] + shownHeader.map(line) + [rule] + rows.map(line)
        lines += notes.map { "  " + $0 }
        return lines.joined(separator: "\n")
    }

    /// RFC 4180 CSV: every header row, then the rows (merged header cells repeated in every column).
    public var csv: String {
        (header + rows).map { $0.map(Self.csvField).joined(separator: ",") }.joined(separator: "\r\n") + "\r\n"
    }

    /// An HTML `<table>` (XHTML-compatible) with a caption, `colspan`s for merged header cells and
    /// the notes below; cells reading "X" get class `oom`.
    public var html: String {
        let spans = headerSpans
        var out = "<table>\n<caption>\(HTML.escape(title))</caption>\n<thead>\n"
        for r in header.indices {
            out += "<tr><th class=\"label\">\(HTML.escape(header[r][0]))</th>"
            for span in spans[r] {
                let colspan = span.count > 1 ? " colspan=\"\(span.count)\"" : ""
                out += "<th\(colspan)>\(HTML.escape(header[r][span.start]))</th>"
            }
            out += "</tr>\n"
        }
        out += "</thead>\n<tbody>\n"
        for row in rows {
            out += "<tr>" + row.enumerated().map { c, cell in
                c == 0 ? "<th class=\"label\">\(HTML.escape(cell))</th>"
                    : cell == "X" ? "<td class=\"oom\">X</td>" : "<td>\(HTML.escape(cell))</td>"
            }.joined() + "</tr>\n"
        }
        out += "</tbody>\n</table>\n"
        for note in notes { out += "<p class=\"note\">\(HTML.escape(note))</p>\n" }
        return out
    }

    static func csvField(_ field: String) -> String {
        field.contains(where: { ",\"\r\n".contains($0) }) ? "\"" + field.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : field
    }
}

/// Escaping for HTML and SVG text and attributes.
enum HTML {
    static func escape(_ text: String) -> String {
        var out = ""
        for ch in text {
            switch ch {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(ch)
            }
        }
        return out
    }
}
