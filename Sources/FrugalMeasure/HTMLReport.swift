// The report's charts (Pareto fronts of time against memory and energy) and its one
// self-contained HTML page: inline CSS and SVG, no scripts, nothing fetched.
import Foundation

extension SweepReport {
    /// A named chart; the name is its file's stem ("pareto-time-memory").
    public struct NamedChart: Sendable {
        public var name: String
        public var chart: ScatterChart
    }

    /// Time against peak memory, and time against energy when some run measured it.
    public var charts: [NamedChart] {
        let outOfMemory = configurations.filter(\.isOutOfMemory).map(\.name)
        let footnote = outOfMemory.isEmpty ? nil : "Out of memory (not drawn): " + outOfMemory.joined(separator: ", ")
        func detail(_ c: ConfigurationSummary) -> String {
            var parts = [c.name + (c.isBaseline ? " (baseline)" : "")]
            if let t = c.seconds { parts.append(String(format: "%.2f s", t.mean)) }
            if let m = c.peakBytes { parts.append(String(format: "%.1f MiB", m.mean / 1_048_576)) }
            if let e = c.energyJoules { parts.append(String(format: "%.1f J", e.mean)) }
            if let s = c.speedUp { parts.append(String(format: "SpeedUp %.2f", s.mean)) }
            if let m = c.memoryUp { parts.append(String(format: "MemoryUp %.2f", m.mean)) }
            if let e = c.energyUp { parts.append(String(format: "EnergyUp %.2f", e.mean)) }
            return parts.joined(separator: ", ")
        }
        var charts = [NamedChart(name: "pareto-time-memory", chart: ScatterChart(
            title: "Runtime vs peak memory", xLabel: "Runtime (s)", yLabel: "Peak memory (MiB)",
            points: configurations.compactMap { c in
                guard let t = c.seconds, let m = c.peakBytes else { return nil }
                return .init(label: c.name, x: t.mean, y: m.mean / 1_048_576, onFront: c.paretoTimeMemory,
                             isBaseline: c.isBaseline, detail: detail(c))
            }, footnote: footnote))]
        if hasEnergy {
            charts.append(NamedChart(name: "pareto-time-energy", chart: ScatterChart(
                title: "Runtime vs energy", xLabel: "Runtime (s)", yLabel: "Energy (J)",
                points: configurations.compactMap { c in
                    guard let t = c.seconds, let e = c.energyJoules else { return nil }
                    return .init(label: c.name, x: t.mean, y: e.mean, onFront: c.paretoTimeEnergy,
                                 isBaseline: c.isBaseline, detail: detail(c))
                }, footnote: footnote)))
        }
        return charts
    }

    /// The tables the report shows, most important first.
    public var tables: [ReportTable] {
        (configurations.isEmpty ? [] : [combinationTable, efficiencyTable, memoryTable, phaseTable].compactMap { $0 }) + evaluations.map(\.table)
    }

    /// One self-contained page (XHTML-compatible, so it also parses as XML): the tables, the charts, the notes.
    public var html: String {
        let e = HTML.escape
        var meta = ["Made \(date)"]
        if let device { meta.append("device: \(device)") }
        if let baseline { meta.append("baseline: \(baseline)") }
        meta.append("\(configurations.count) configurations, up to \(repeats) repeat(s) each")
        var body = "<h1>\(e(title))</h1>\n<p class=\"meta\">\(e(meta.joined(separator: " · ")))</p>\n"
        for table in tables { body += "<section>\n\(table.html)</section>\n" }
        body += "<section class=\"charts\">\n"
        for named in charts { body += "<figure>\n\(named.chart.svg)</figure>\n" }
        body += "</section>\n"
        if !notes.isEmpty {
            body += "<section>\n<h2>Notes</h2>\n<ul>\n" + notes.map { "<li>\(e($0))</li>\n" }.joined() + "</ul>\n</section>\n"
        }
        return """
        <!DOCTYPE html>
        <html xmlns="http://www.w3.org/1999/xhtml" lang="en">
        <head>
        <meta charset="utf-8"/>
        <title>\(e(title))</title>
        <style>
        body { font-family: Helvetica, Arial, sans-serif; margin: 24px 32px; color: #222; background: #fff; }
        h1 { font-size: 22px; margin: 0 0 4px 0; }
        p.meta { color: #555; margin: 0 0 18px 0; font-size: 13px; }
        section { margin-bottom: 22px; }
        table { border-collapse: collapse; font-size: 13px; }
        caption { text-align: left; font-weight: bold; font-size: 15px; padding: 4px 0 6px 0; }
        th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; font-variant-numeric: tabular-nums; }
        thead th { background: #eef3f8; text-align: center; }
        th.label { text-align: left; background: #f6f6f6; }
        td.oom { color: #b00020; font-weight: bold; text-align: center; background: #fdecee; }
        p.note { color: #555; font-size: 12px; margin: 3px 0; }
        .charts { display: flex; flex-wrap: wrap; gap: 16px; }
        figure { margin: 0; border: 1px solid #ddd; }
        </style>
        </head>
        <body>
        \(body)</body>
        </html>

        """
    }

    /// Writes report.html, report.json, report.csv, combination.csv (when there are factors) and one
    /// SVG per chart into `directory`.
    /// - Returns: the files written.
    @discardableResult
    public func write(to directory: URL) throws -> [URL] {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var files = [(String, Data)]()
        files.append(("report.html", Data(html.utf8)))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        files.append(("report.json", try encoder.encode(self)))
        files.append(("report.csv", Data(csv.utf8)))
        if let combination = combinationTable { files.append(("combination.csv", Data(combination.csv.utf8))) }
        for named in charts { files.append(("\(named.name).svg", Data(named.chart.svg.utf8))) }
        return try files.map { name, data in
            let url = directory.appendingPathComponent(name)
            try data.write(to: url, options: .atomic)
            return url
        }
    }
}
