// ScatterChart: a self-contained SVG scatter plot of configurations, lower-left best, with the
// Pareto front drawn through the configurations nothing else beats on both axes.
import Foundation

/// A scatter plot rendered as standalone SVG (no scripts, no external fonts or styles).
public struct ScatterChart: Sendable {
    /// One configuration on the chart.
    public struct Point: Sendable {
        public var label: String
        public var x: Double
        public var y: Double
        /// On the Pareto front: drawn filled and joined by the front's line.
        public var onFront: Bool
        public var isBaseline: Bool
        /// Shown as the point's tooltip.
        public var detail: String

        public init(label: String, x: Double, y: Double, onFront: Bool, isBaseline: Bool = false, detail: String = "") {
            self.label = label
            self.x = x
            self.y = y
            self.onFront = onFront
            self.isBaseline = isBaseline
            self.detail = detail
        }
    }

    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var points: [Point]
    /// A line under the plot (e.g. which configurations ran out of memory).
    public var footnote: String?
    public var width = 640.0
    public var height = 440.0

    public init(title: String, xLabel: String, yLabel: String, points: [Point], footnote: String? = nil) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.points = points
        self.footnote = footnote
    }

    /// Round tick values from 0 to at least `maximum`: steps of 1, 2 or 5 × 10^k, about five of them.
    static func ticks(upTo maximum: Double) -> [Double] {
        guard maximum > 0, maximum.isFinite else { return [0, 1] }
        let rough = maximum / 5
        let magnitude = pow(10, floor(log10(rough)))
        let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= rough } ?? 10 * magnitude
        let count = Int((maximum / step).rounded(.up))
        return (0...max(count, 1)).map { Double($0) * step }
    }

    static func tickText(_ value: Double) -> String {
        if value == 0 { return "0" }
        if abs(value) >= 100 || value == value.rounded() { return String(format: "%.0f", value) }
        return String(format: abs(value) >= 1 ? "%.1f" : "%.2g", value)
    }

    /// `text` in lines of at most `characters` (words longer than that get lines of their own).
    static func wrap(_ text: String, characters: Int) -> [String] {
        var lines = [String]()
        for word in text.split(separator: " ") {
            if let last = lines.last, last.count + 1 + word.count <= characters {
                lines[lines.count - 1] = last + " " + word
            } else {
                lines.append(String(word))
            }
        }
        return lines
    }

    /// The chart as an SVG document.
    public var svg: String {
        let left = 78.0, right = 24.0, top = 48.0
        let footnoteLines = footnote.map { Self.wrap($0, characters: Int((width - left - right) / 6.2)) } ?? []
        let bottom = 56.0 + 16 * Double(footnoteLines.count)
        let plotWidth = width - left - right, plotHeight = height - top - bottom
        let xTicks = Self.ticks(upTo: (points.map(\.x).max() ?? 1) * 1.05)
        let yTicks = Self.ticks(upTo: (points.map(\.y).max() ?? 1) * 1.05)
        let xMax = xTicks.last!, yMax = yTicks.last!
        func px(_ x: Double) -> Double { left + x / xMax * plotWidth }
        func py(_ y: Double) -> Double { top + plotHeight - y / yMax * plotHeight }
        func f(_ v: Double) -> String { String(format: "%.1f", v) }
        let e = HTML.escape

        var s = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(f(width))" height="\(f(height))" viewBox="0 0 \(f(width)) \(f(height))" \
        font-family="Helvetica, Arial, sans-serif" font-size="12" role="img">
        <title>\(e(title))</title>
        <rect x="0" y="0" width="\(f(width))" height="\(f(height))" fill="#ffffff"/>
        <text x="\(f(left))" y="24" font-size="15" font-weight="bold" fill="#222222">\(e(title))</text>

        """
        // Grid and axes.
        for t in xTicks {
            s += "<line x1=\"\(f(px(t)))\" y1=\"\(f(top))\" x2=\"\(f(px(t)))\" y2=\"\(f(top + plotHeight))\" stroke=\"#e4e4e4\"/>\n"
            s += "<text x=\"\(f(px(t)))\" y=\"\(f(top + plotHeight + 16))\" text-anchor=\"middle\" fill=\"#555555\">\(Self.tickText(t))</text>\n"
        }
        for t in yTicks {
            s += "<line x1=\"\(f(left))\" y1=\"\(f(py(t)))\" x2=\"\(f(left + plotWidth))\" y2=\"\(f(py(t)))\" stroke=\"#e4e4e4\"/>\n"
            s += "<text x=\"\(f(left - 8))\" y=\"\(f(py(t) + 4))\" text-anchor=\"end\" fill=\"#555555\">\(Self.tickText(t))</text>\n"
        }
        s += "<rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(plotWidth))\" height=\"\(f(plotHeight))\" fill=\"none\" stroke=\"#888888\"/>\n"
        s += "<text x=\"\(f(left + plotWidth / 2))\" y=\"\(f(top + plotHeight + 38))\" text-anchor=\"middle\" fill=\"#222222\">\(e(xLabel))</text>\n"
        s += "<text transform=\"translate(20 \(f(top + plotHeight / 2))) rotate(-90)\" text-anchor=\"middle\" fill=\"#222222\">\(e(yLabel))</text>\n"
        // The front, as a staircase: each front point dominates the region above and to its right.
        let front = points.filter(\.onFront).sorted { $0.x < $1.x }
        if front.count > 1 {
            var path = "M \(f(px(front[0].x))) \(f(py(front[0].y)))"
            for p in front.dropFirst() { path += " H \(f(px(p.x))) V \(f(py(p.y)))" }
            s += "<path d=\"\(path)\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" stroke-dasharray=\"5 3\"/>\n"
        }
        // Points and their labels, placed to avoid the labels already drawn.
        var placed = [(Double, Double, Double, Double)]()
        for p in points {
            let x = px(p.x), y = py(p.y)
            s += "<g><title>\(e(p.detail.isEmpty ? p.label : p.detail))</title>"
            if p.isBaseline {
                s += "<circle cx=\"\(f(x))\" cy=\"\(f(y))\" r=\"9\" fill=\"none\" stroke=\"#d62728\" stroke-width=\"1.5\"/>"
            }
            s += p.onFront
                ? "<circle cx=\"\(f(x))\" cy=\"\(f(y))\" r=\"5\" fill=\"#1f77b4\"/>"
                : "<circle cx=\"\(f(x))\" cy=\"\(f(y))\" r=\"5\" fill=\"#ffffff\" stroke=\"#7f7f7f\" stroke-width=\"1.5\"/>"
            s += "</g>\n"
            let w = Double(p.label.count) * 6.4, h = 12.0
            let candidates = [(x + 10, y - 8), (x + 10, y + 16), (x - 10 - w, y - 8), (x - 10 - w, y + 16),
                              (x - w / 2, y - 14), (x - w / 2, y + 22)]
            let fits = { (c: (Double, Double)) in
                c.0 >= left && c.0 + w <= left + plotWidth && c.1 - h >= top && c.1 <= top + plotHeight
                    && !placed.contains { b in c.0 < b.0 + b.2 && b.0 < c.0 + w && c.1 - h < b.1 && b.1 - b.3 < c.1 }
            }
            let spot = candidates.first(where: fits) ?? candidates[0]
            placed.append((spot.0, spot.1, w, h))
            s += "<text x=\"\(f(spot.0))\" y=\"\(f(spot.1))\" font-size=\"11\" fill=\"#333333\">\(e(p.label))</text>\n"
        }
        // Legend.
        let lx = left + plotWidth - 250, ly = 22.0
        s += """
        <circle cx="\(f(lx))" cy="\(f(ly - 4))" r="5" fill="#1f77b4"/><text x="\(f(lx + 9))" y="\(f(ly))" font-size="11">Pareto front</text>
        <circle cx="\(f(lx + 92))" cy="\(f(ly - 4))" r="5" fill="#ffffff" stroke="#7f7f7f" stroke-width="1.5"/><text x="\(f(lx + 101))" y="\(f(ly))" font-size="11">dominated</text>
        <circle cx="\(f(lx + 172))" cy="\(f(ly - 4))" r="8" fill="none" stroke="#d62728" stroke-width="1.5"/><text x="\(f(lx + 184))" y="\(f(ly))" font-size="11">baseline</text>

        """
        for (i, line) in footnoteLines.enumerated() {
            let y = height - 12 - 16 * Double(footnoteLines.count - 1 - i)
            s += "<text x=\"\(f(left))\" y=\"\(f(y))\" font-size=\"11\" fill=\"#555555\">\(e(line))</text>\n"
        }
        return s + "</svg>\n"
    }
}
