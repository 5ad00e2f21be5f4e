// Charts: the results of a `compare` run drawn as SVG, one file per workload family, and the
// results file they are drawn from (what `--json` writes), read and written here.
//
// A family's chart has, for each of its workloads, a group of bars, one per allocator in that
// allocator's colour (the same in every chart):
// - the time panel: the median time per operation divided by the best peer's median on the
//   same workload (`Report.bestPeerTime`, the tables' `× best peer`), on a log scale, where
//   a bar starts at the line at 1× (the best peer) and goes up when slower, down when
//   faster; whiskers span the fastest and the slowest repetition;
// - the RSS panel: the median peak RSS in MiB, from zero, with the same whiskers;
// - for burst then idle, a third panel: the RSS readings of the run as lines over time, one
//   line per allocator.
// A legend names the colours; a caption says what was measured, on which machine and when.
//
// The SVG is text built here, with no dependency and no font metrics: every name that comes
// from the results is XML-escaped, and text widths are estimated from character counts
// (`Layout.characterWidth`). Foundation is used to read and write the results file only.

import Foundation
import Workloads

// MARK: - The results file

/// Why a results file cannot be drawn: the file, and what is wrong with it.
public struct ResultsFileError: Error, Equatable, CustomStringConvertible {
    /// The file as it was named.
    public let path: String
    /// What is wrong, as a phrase that follows the file's name (`lacks the field samples[2].nanoseconds`).
    public let problem: String

    public var description: String { "\(path) \(problem)" }
}

extension Results {
    /// Reads a results file that `compare --json` wrote.
    ///
    /// - Throws: `ResultsFileError` when the file cannot be read, is not JSON, lacks a field or
    ///   holds one of the wrong type (named by its path, such as `samples[3].nanoseconds`), has
    ///   no samples, or has a sample whose figures cannot be drawn.
    public static func load(from path: String) throws(ResultsFileError) -> Results {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ResultsFileError(path: path, problem: "cannot be read: \(error.localizedDescription)")
        }
        let results: Results
        do {
            results = try JSONDecoder().decode(Results.self, from: data)
        } catch let error as DecodingError {
            throw ResultsFileError(path: path, problem: describe(error))
        } catch {
            throw ResultsFileError(path: path, problem: "cannot be decoded: \(error)")
        }
        if let problem = results.problem { throw ResultsFileError(path: path, problem: problem) }
        return results
    }

    /// Writes these results as JSON, creating the file's folder. Keys are sorted and the text
    /// indented, so that two runs' files compare line by line.
    public func write(to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let url = URL(fileURLWithPath: path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try encoder.encode(self).write(to: url)
    }

    /// This machine in words, for `machine`: the CPU model, the operating system and the
    /// kernel, each left out where it cannot be read (`AMD EPYC, Debian GNU/Linux 12
    /// (bookworm), Linux 6.1.0`).
    public static func describeThisMachine() -> String {
        let cpuInfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let model = cpuInfo.split(separator: "\n").first { $0.hasPrefix("model name") }.flatMap { line in
            line.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) }
        }
        let kernel = (try? String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8))
            .map { "Linux " + $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        let system = ProcessInfo.processInfo.operatingSystemVersionString
        return [model, system.isEmpty ? nil : system, kernel].compactMap { $0 }.joined(separator: ", ")
    }

    /// What makes these results undrawable, nil when nothing does. The decoder has checked
    /// every field's type; this checks what a type cannot say.
    var problem: String? {
        if samples.isEmpty { return "has no samples: nothing to draw" }
        if let index = samples.firstIndex(where: { $0.operations < 1 }) {
            return "has samples[\(index)] with \(samples[index].operations) operations (a sample has at least 1)"
        }
        if let index = samples.firstIndex(where: { $0.peakResidentBytes < 0 }) {
            return "has samples[\(index)] with a negative peakResidentBytes (\(samples[index].peakResidentBytes))"
        }
        return nil
    }

    /// A decoding error as a phrase that follows the file's name, with the path of the field.
    static func describe(_ error: DecodingError) -> String {
        switch error {
        case .keyNotFound(let key, let context):
            return "lacks the field \(fieldPath(context.codingPath + [key]))"
        case .typeMismatch(_, let context), .valueNotFound(_, let context):
            return "has a bad value at \(fieldPath(context.codingPath)): \(context.debugDescription)"
        case .dataCorrupted(let context) where context.codingPath.isEmpty:
            let detail = context.underlyingError.map { "\($0)" } ?? context.debugDescription
            return "is not a JSON results file of compare: \(detail)"
        case .dataCorrupted(let context):
            return "has a bad value at \(fieldPath(context.codingPath)): \(context.debugDescription)"
        @unknown default:
            return "cannot be decoded: \(error)"
        }
    }

    /// A coding path as a reader writes it: `samples[3].nanoseconds`.
    static func fieldPath(_ path: [any CodingKey]) -> String {
        guard !path.isEmpty else { return "the top level" }
        let text = path.map { key in key.intValue.map { "[\($0)]" } ?? ".\(key.stringValue)" }.joined()
        return text.hasPrefix(".") ? String(text.dropFirst()) : text
    }
}

// MARK: - Charts

/// The charts of a run: one SVG per workload family that has results.
public enum Charts {
    /// One chart, ready to be written.
    public struct Chart: Sendable, Equatable {
        /// The file's name in the charts folder (`fileName(of:)`).
        public let fileName: String
        public let family: Workload.Family
        /// The whole SVG document.
        public let svg: String
    }

    /// The chart of every family of `workloads` that has samples in `results`, in the order
    /// of the tables. Samples of workloads that `workloads` lacks are left out
    /// (`workloadsWithoutChart` names them).
    public static func draw(_ results: Results, workloads: [Workload] = Workload.all) -> [Chart] {
        let summaries = Report.summarize(results.samples)
        let charts = Workload.families(of: workloads).compactMap { family -> Chart? in
            let groups = workloads.filter { $0.family == family }.compactMap { workload -> WorkloadGroup? in
                let cells = summaries.filter { $0.workload == workload.name }
                guard !cells.isEmpty else { return nil }
                return WorkloadGroup(
                    workload: workload.name, cells: cells,
                    bestPeerTime: Report.bestPeerTime(of: workload.name, in: summaries).flatMap { $0 > 0 ? $0 : nil })
            }
            guard !groups.isEmpty else { return nil }
            let svg = FamilyChart(family: family, groups: groups, results: results).svg
            return Chart(fileName: fileName(of: family), family: family, svg: svg)
        }
        let names = charts.map(\.fileName)
        precondition(Set(names).count == names.count, "two families have the same chart file name: \(names)")
        return charts
    }

    /// Writes `draw(results, workloads:)` into `directory`, creating it, and returns the paths
    /// written. Files already there that no chart of this run replaces are left alone.
    public static func write(
        _ results: Results, into directory: String, workloads: [Workload] = Workload.all
    ) throws -> [String] {
        let folder = URL(fileURLWithPath: directory)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        return try draw(results, workloads: workloads).map { chart in
            let url = folder.appendingPathComponent(chart.fileName)
            try Data(chart.svg.utf8).write(to: url)
            return url.path
        }
    }

    /// The workloads of `results` that `workloads` lacks (renamed or removed since the run),
    /// which no chart shows, in the order they ran.
    public static func workloadsWithoutChart(in results: Results, workloads: [Workload] = Workload.all) -> [String] {
        let known = Set(workloads.map(\.name))
        var missing: [String] = []
        for sample in results.samples where !known.contains(sample.workload) && !missing.contains(sample.workload) {
            missing.append(sample.workload)
        }
        return missing
    }

    /// A family's chart file name: its title up to the first parenthesis, in lowercase ASCII
    /// words joined by hyphens, with `.svg` (`Thread churn (blocks freed…)` gives
    /// `thread-churn.svg`). Documents link to these names, so they change only with the title.
    public static func fileName(of family: Workload.Family) -> String {
        let title = family.title.prefix { $0 != "(" }
        let words = title.lowercased().split { !($0.isASCII && ($0.isLetter || $0.isNumber)) }
        return words.joined(separator: "-") + ".svg"
    }

    /// The colour of an allocator, the same in every chart: its place in the catalogue's
    /// columns (`AllocatorColumn.all`) picks it from `palette`; a name the catalogue does not
    /// know (from an older results file) gets one from a hash of the name.
    public static func colour(of allocator: String) -> String {
        let index = catalogueOrder[allocator] ?? Int(truncatingIfNeeded: stableHash(allocator) % UInt64(palette.count))
        return palette[index % palette.count]
    }

    /// One colour per catalogue column, in the columns' order. The first six are chosen for
    /// what they show and keep their meaning: glibc grey (the system's default), the peers
    /// blue, green and purple, the project's own allocators orange and red. The others are
    /// those of the packages' suites, chosen to differ from their neighbours, because a
    /// suite's columns share a chart.
    static let palette = [
        "#6e6e6e", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#d62728",
        "#17becf", "#8c564b", "#e377c2", "#bcbd22", "#393b79", "#e7ba52", "#637939", "#7b4173",
        "#6baed6", "#843c39", "#74c476", "#de9ed6", "#8c6d31", "#5254a3", "#ad494a", "#31a354",
        "#9c9ede", "#b5cf6b", "#e6550d", "#756bb1", "#969696", "#fdae6b",
    ]

    /// The catalogue's columns by name, with their place (computed once: the catalogue is fixed).
    static let catalogueOrder: [String: Int] = Dictionary(
        AllocatorColumn.all.map(\.name).enumerated().map { ($1, $0) }, uniquingKeysWith: { first, _ in first })

    /// FNV-1a over the name's UTF-8: the same on every run and machine, unlike `Hasher`.
    static func stableHash(_ text: String) -> UInt64 {
        text.utf8.reduce(0xcbf2_9ce4_8422_2325 as UInt64) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
    }

    /// The RSS readings of burst then idle (its extras, MiB), in the order the run takes them,
    /// with what each moment is: the x axis of its RSS-over-time panel.
    static let burstIdleTimeline: [(key: String, moment: String)] = {
        let delay = Double(purgeDelayNanoseconds) / 1e9
        return [
            ("rss.before", "before the burst"), ("rss.burst", "every block live"),
            ("rss.freed", "all freed, threads joined"), ("rss.delay1", String(format: "+%g s idle", delay)),
            ("rss.delay2", String(format: "+%g s idle", 2 * delay)),
        ]
    }()
}

/// One workload's cells: a group of bars in each panel.
struct WorkloadGroup {
    let workload: String
    /// One per allocator, in the order they ran.
    let cells: [CellSummary]
    /// The best peer's median time per operation; nil when no peer ran the workload (or it
    /// took no time), and then the group has no time bars.
    let bestPeerTime: Double?
}

// MARK: - Layout

/// Sizes of the chart, in SVG user units (pixels at 100%).
enum Layout {
    /// The narrowest chart: room for the legend and the caption of a family of one workload.
    static let minimumWidth = 760.0
    /// Left of the plots: the rotated axis title and tick labels such as `0.0001×`.
    static let leftMargin = 84.0
    static let rightMargin = 24.0
    /// A bar's width, 1 unit of it the gap to the next bar of its group.
    static let barWidth = 14.0
    /// Space between two groups of bars.
    static let groupGap = 22.0
    /// Space around a workload's label within its group's slot.
    static let labelPadding = 8.0
    static let timePlotHeight = 240.0
    static let residentPlotHeight = 150.0
    static let timelinePlotHeight = 220.0
    /// The average advance of a character, as a fraction of the font size: DejaVu Sans and
    /// Arial average 0.5 to 0.55 on lowercase letters and digits, so 0.6 errs towards room
    /// to spare (an underestimate would make labels overlap).
    static let characterWidth = 0.6
    static let fontFamily = "DejaVu Sans, Verdana, Arial, sans-serif"
    static let titleSize = 17.0
    static let panelTitleSize = 13.0
    static let textSize = 12.0
    static let smallSize = 11.0
    /// Line height as a multiple of the font size.
    static let lineSpacing = 1.3

    /// The estimated width of `text` at `size`.
    static func width(of text: String, size: Double) -> Double { Double(text.count) * size * characterWidth }

    /// `text` in lines at most `width` wide at `size`, broken after each `separator` (which
    /// stays at the end of its line, except a space); a piece wider than `width` gets a line
    /// of its own rather than being cut.
    static func wrap(_ text: String, width: Double, size: Double, after separator: Character) -> [String] {
        var pieces: [String] = []
        var piece = ""
        for character in text {
            piece.append(character)
            if character == separator {
                pieces.append(piece)
                piece = ""
            }
        }
        if !piece.isEmpty { pieces.append(piece) }
        var lines: [String] = []
        var line = ""
        for piece in pieces {
            let candidate = line + piece
            if !line.isEmpty && Self.width(of: candidate.trimmingCharacters(in: .whitespaces), size: size) > width {
                lines.append(line)
                line = piece
            } else {
                line = candidate
            }
        }
        if !line.isEmpty { lines.append(line) }
        return lines.map { $0.trimmingCharacters(in: .whitespaces) }
    }
}

/// A scale from values to heights: where a value lies in a plot `height` tall whose top is
/// at `top`.
protocol ChartScale {
    /// The values with a grid line and a label, lowest first.
    var ticks: [Double] { get }
    /// The y of `value`, clamped into the plot.
    func y(_ value: Double, top: Double, height: Double) -> Double
    /// A tick's label.
    func label(_ tick: Double) -> String
}

/// A log scale for ratios: 2× slower and 2× faster lie equally far from 1×, and ratios
/// from 0.0001× (a release moved to another thread) to 300× (a system call per block) fit
/// in one panel.
struct RatioScale: ChartScale {
    /// The bounds, each a 1-2-5 step (…, 0.5, 1, 2, 5, 10, …).
    let lowest: Double
    let highest: Double

    /// Ratios below this are drawn at it: a time of 0 (a timer that did not tick) has no place
    /// on a log scale, and nothing measured here is a million times faster than a peer.
    static let floor = 1e-6

    /// A scale covering `values` (the positive ones) and 1, with some room above and below.
    init(covering values: [Double]) {
        let positive = values.filter { $0 > 0 && $0.isFinite }
        let low = max(Self.floor, min(positive.min() ?? 1, 1) / 1.1)
        let high = max(positive.max() ?? 1, 1) * 1.1
        lowest = Self.steps(from: low, to: high).last { $0 <= low } ?? low
        highest = Self.steps(from: low, to: high).first { $0 >= high } ?? high
    }

    /// The 1-2-5 steps from the decade below `low` to the decade above `high`.
    static func steps(from low: Double, to high: Double) -> [Double] {
        let first = Int(log10(low).rounded(.down)) - 1
        let last = Int(log10(high).rounded(.up)) + 1
        return (first...last).flatMap { exponent in [1.0, 2, 5].map { $0 * pow(10, Double(exponent)) } }
    }

    /// Every 1-2-5 step within two decades, else only the powers of ten, so labels never crowd.
    var ticks: [Double] {
        let all = Self.steps(from: lowest, to: highest).filter { $0 >= lowest * 0.999 && $0 <= highest * 1.001 }
        guard log10(highest / lowest) > 2.01 else { return all }
        return all.filter { abs(log10($0).rounded() - log10($0)) < 1e-9 }
    }

    func y(_ value: Double, top: Double, height: Double) -> Double {
        let clamped = min(max(value, lowest), highest)
        return top + height * log10(highest / clamped) / log10(highest / lowest)
    }

    func label(_ tick: Double) -> String {
        let decimals = tick >= 1 ? 0 : Int((-log10(tick)).rounded(.up))
        return String(format: "%.\(decimals)f×", tick)
    }
}

/// A linear scale from zero for sizes in MiB, with 1-2-5 steps.
struct SizeScale: ChartScale {
    let step: Double
    let highest: Double

    /// A scale from 0 covering `values`, in about four steps.
    init(covering values: [Double]) {
        let top = max(values.filter(\.isFinite).max() ?? 0, 0)
        guard top > 0 else {
            step = 1
            highest = 4
            return
        }
        let rough = top / 4
        let magnitude = pow(10, log10(rough).rounded(.down))
        step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= rough } ?? 10 * magnitude
        highest = (top / step).rounded(.up) * step
    }

    var ticks: [Double] { (0...Int((highest / step).rounded())).map { Double($0) * step } }

    func y(_ value: Double, top: Double, height: Double) -> Double {
        top + height * (1 - min(max(value, 0), highest) / highest)
    }

    /// As many decimals as the step has (none from a step of 1 up).
    func label(_ tick: Double) -> String {
        String(format: "%.\(max(0, Int(-log10(step).rounded(.down))))f", tick)
    }
}

// MARK: - A family's chart

/// Lays out and draws one family's chart.
struct FamilyChart {
    let family: Workload.Family
    let groups: [WorkloadGroup]
    let results: Results
    /// The allocators of the family, in the order they first appear: the legend's order.
    let allocators: [String]
    /// Each group's slot: where it starts on the x axis and how wide it is.
    let slots: [(x: Double, width: Double)]
    /// Each group's label, in lines.
    let labels: [[String]]
    let width: Double

    init(family: Workload.Family, groups: [WorkloadGroup], results: Results) {
        self.family = family
        self.groups = groups
        self.results = results
        var allocators: [String] = []
        for cell in groups.flatMap(\.cells) where !allocators.contains(cell.allocator) {
            allocators.append(cell.allocator)
        }
        self.allocators = allocators
        // A slot holds its bars and its label's longest unbreakable piece; leftover room is
        // shared evenly when the groups do not fill the narrowest chart.
        var widths = groups.map { group in
            let longestPiece = group.workload.split(separator: "-").map {
                Layout.width(of: $0 + "-", size: Layout.smallSize)
            }
            return max(
                Double(group.cells.count) * Layout.barWidth + Layout.groupGap,
                (longestPiece.max() ?? 0) + Layout.labelPadding)
        }
        let plotWidth = max(widths.reduce(0, +), Layout.minimumWidth - Layout.leftMargin - Layout.rightMargin)
        let spare = (plotWidth - widths.reduce(0, +)) / Double(widths.count)
        widths = widths.map { $0 + spare }
        var x = Layout.leftMargin
        var slots: [(x: Double, width: Double)] = []
        for width in widths {
            slots.append((x, width))
            x += width
        }
        self.slots = slots
        labels = zip(groups, widths).map { group, width in
            Layout.wrap(group.workload, width: width - Layout.labelPadding, size: Layout.smallSize, after: "-")
        }
        width = Layout.leftMargin + plotWidth + Layout.rightMargin
    }

    var plotWidth: Double { width - Layout.leftMargin - Layout.rightMargin }

    /// The workloads of this family that have an RSS timeline: burst then idle's, where its
    /// cells carry the readings.
    var timelineGroups: [WorkloadGroup] {
        guard family == .burstIdle else { return [] }
        return groups.filter { group in
            group.cells.contains { cell in Charts.burstIdleTimeline.contains { cell.extras[$0.key] != nil } }
        }
    }

    var svg: String {
        var body = SVGBody()
        let titleLines = Layout.wrap(family.title, width: plotWidth, size: Layout.titleSize, after: " ")
        body.lines(titleLines, x: Layout.leftMargin, y: 30, size: Layout.titleSize, weight: "bold", className: "title")
        let titleBottom = 30 + Double(titleLines.count - 1) * Layout.titleSize * Layout.lineSpacing
        var y = drawLegend(&body, top: titleBottom + 14) + 14
        y = drawTimePanel(&body, top: y) + 18
        y = drawResidentPanel(&body, top: y) + 18
        for group in timelineGroups { y = drawTimeline(&body, group: group, top: y) + 18 }
        y = drawCaption(&body, top: y)
        let height = (y + 12).rounded(.up)
        let width = self.width.rounded(.up)
        let title = SVGBody.escaped(family.title)
        return """
            <?xml version="1.0" encoding="UTF-8"?>
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" \
            viewBox="0 0 \(Int(width)) \(Int(height))" font-family="\(Layout.fontFamily)" \
            role="img" aria-label="\(title)">
            <title>\(title)</title>
            <rect class="background" width="100%" height="100%" fill="#ffffff"/>

            """ + body.text + "</svg>\n"
    }

    /// The legend: a swatch and a name per allocator, in rows as wide as the plots. Returns
    /// its bottom.
    func drawLegend(_ body: inout SVGBody, top: Double) -> Double {
        let rowHeight = 20.0
        var x = Layout.leftMargin
        var y = top
        for allocator in allocators {
            let itemWidth = 12 + 6 + Layout.width(of: allocator, size: Layout.textSize) + 18
            if x > Layout.leftMargin && x + itemWidth > Layout.leftMargin + plotWidth {
                x = Layout.leftMargin
                y += rowHeight
            }
            body.rect(x: x, y: y, width: 12, height: 12, fill: Charts.colour(of: allocator), className: "legend-swatch")
            body.text(allocator, x: x + 18, y: y + 10.5, size: Layout.textSize, className: "legend")
            x += itemWidth
        }
        return y + rowHeight
    }

    /// The time panel: bars from 1× to each cell's ratio, whiskers from its fastest to its
    /// slowest repetition. Returns its bottom.
    func drawTimePanel(_ body: inout SVGBody, top: Double) -> Double {
        body.text(
            "Time per operation ÷ the best peer's (log scale): a bar up is slower, down is faster",
            x: Layout.leftMargin, y: top + 14, size: Layout.panelTitleSize, weight: "bold", className: "panel-title")
        let plotTop = top + 26
        let height = Layout.timePlotHeight
        let ratios = groups.flatMap { group in
            group.bestPeerTime.map { best in group.cells.flatMap { [$0.time.minimum / best, $0.time.maximum / best] } }
                ?? []
        }
        let scale = RatioScale(covering: ratios)
        drawFrame(&body, scale: scale, top: plotTop, height: height, axisTitle: "× best peer (ratio of ns/op)")
        let unity = scale.y(1, top: plotTop, height: height)
        body.line(
            x1: Layout.leftMargin, y1: unity, x2: Layout.leftMargin + plotWidth, y2: unity, stroke: "#222222",
            width: 1.5, className: "unity")
        for (group, slot) in zip(groups, slots) {
            guard let best = group.bestPeerTime else {
                body.text(
                    "no peer ran it", x: slot.x + slot.width / 2, y: unity - 6, size: Layout.smallSize,
                    anchor: "middle", fill: "#555555", className: "no-peer")
                continue
            }
            for (index, cell) in group.cells.enumerated() {
                let x = barX(slot: slot, count: group.cells.count, index: index)
                let ratio = cell.time.median / best
                let end = scale.y(ratio, top: plotTop, height: height)
                let tooltip =
                    "\(group.workload) · \(cell.allocator): \(Self.decimal(ratio))× best peer; "
                    + "\(Self.decimal(cell.time.median)) ns/op median, "
                    + "\(Self.decimal(cell.time.minimum)) – \(Self.decimal(cell.time.maximum)) over the repetitions"
                body.bar(
                    x: x, y: min(unity, end), width: Layout.barWidth - 1, height: abs(end - unity),
                    fill: Charts.colour(of: cell.allocator), className: "bar time", workload: group.workload,
                    allocator: cell.allocator, value: ratio, tooltip: tooltip)
                // A band across the bar's end, so that a bar of no height (the best peer's
                // own, at 1×) still shows its colour on the line.
                body.rect(
                    x: x, y: end - 1.5, width: Layout.barWidth - 1, height: 3, fill: Charts.colour(of: cell.allocator),
                    className: "median")
                body.whisker(
                    x: x + (Layout.barWidth - 1) / 2,
                    from: scale.y(cell.time.minimum / best, top: plotTop, height: height),
                    to: scale.y(cell.time.maximum / best, top: plotTop, height: height), className: "whisker time",
                    workload: group.workload, allocator: cell.allocator)
            }
        }
        return drawGroupLabels(&body, top: plotTop + height)
    }

    /// The RSS panel: bars from zero to each cell's median peak RSS, with whiskers. Returns
    /// its bottom.
    func drawResidentPanel(_ body: inout SVGBody, top: Double) -> Double {
        body.text(
            "Peak RSS (the worker's high-water mark): lower keeps less memory", x: Layout.leftMargin, y: top + 14,
            size: Layout.panelTitleSize, weight: "bold", className: "panel-title")
        let plotTop = top + 26
        let height = Layout.residentPlotHeight
        let mebibytes = 1_048_576.0
        let scale = SizeScale(covering: groups.flatMap(\.cells).map { $0.peakResidentBytes.maximum / mebibytes })
        drawFrame(&body, scale: scale, top: plotTop, height: height, axisTitle: "peak RSS (MiB)")
        let base = plotTop + height
        for (group, slot) in zip(groups, slots) {
            for (index, cell) in group.cells.enumerated() {
                let x = barX(slot: slot, count: group.cells.count, index: index)
                let peak = cell.peakResidentBytes
                let end = scale.y(peak.median / mebibytes, top: plotTop, height: height)
                let tooltip =
                    "\(group.workload) · \(cell.allocator): \(Self.decimal(peak.median / mebibytes)) MiB peak RSS "
                    + "median, \(Self.decimal(peak.minimum / mebibytes)) – \(Self.decimal(peak.maximum / mebibytes))"
                body.bar(
                    x: x, y: end, width: Layout.barWidth - 1, height: base - end,
                    fill: Charts.colour(of: cell.allocator),
                    className: "bar rss", workload: group.workload, allocator: cell.allocator,
                    value: peak.median / mebibytes, tooltip: tooltip)
                body.whisker(
                    x: x + (Layout.barWidth - 1) / 2,
                    from: scale.y(peak.minimum / mebibytes, top: plotTop, height: height),
                    to: scale.y(peak.maximum / mebibytes, top: plotTop, height: height), className: "whisker rss",
                    workload: group.workload, allocator: cell.allocator)
            }
        }
        return drawGroupLabels(&body, top: base)
    }

    /// RSS over time for one burst-then-idle workload: a line per allocator through the
    /// medians of its readings. Returns its bottom.
    func drawTimeline(_ body: inout SVGBody, group: WorkloadGroup, top: Double) -> Double {
        body.text(
            "\(group.workload): RSS over the run (median of the repetitions)", x: Layout.leftMargin, y: top + 14,
            size: Layout.panelTitleSize, weight: "bold", className: "panel-title")
        let plotTop = top + 26
        let height = Layout.timelinePlotHeight
        let moments = Charts.burstIdleTimeline
        let scale = SizeScale(
            covering: group.cells.flatMap { cell in moments.compactMap { cell.extras[$0.key]?.median } })
        drawFrame(&body, scale: scale, top: plotTop, height: height, axisTitle: "RSS (MiB)", bands: false)
        let step = plotWidth / Double(moments.count)
        for index in moments.indices {
            let x = Layout.leftMargin + step * (Double(index) + 0.5)
            body.line(
                x1: x, y1: plotTop, x2: x, y2: plotTop + height, stroke: "#e4e4e4", width: 1, className: "grid")
        }
        // Each allocator's points sit a few units apart, so that lines with equal readings
        // (common: several allocators give everything back) stay visible side by side.
        let separation = 4.0
        for (index, cell) in group.cells.enumerated() {
            let offset = (Double(index) - Double(group.cells.count - 1) / 2) * separation
            let points = moments.enumerated().compactMap { moment, reading -> (x: Double, y: Double)? in
                cell.extras[reading.key].map { readings in
                    (
                        Layout.leftMargin + step * (Double(moment) + 0.5) + offset,
                        scale.y(readings.median, top: plotTop, height: height)
                    )
                }
            }
            let readings = moments.compactMap { reading in
                cell.extras[reading.key].map { "\(reading.moment): \(Self.decimal($0.median)) MiB" }
            }
            body.polyline(
                points, stroke: Charts.colour(of: cell.allocator), className: "timeline", workload: group.workload,
                allocator: cell.allocator, tooltip: "\(cell.allocator): " + readings.joined(separator: "; "))
        }
        var bottom = plotTop + height
        for (index, moment) in moments.enumerated() {
            let lines = Layout.wrap(
                moment.moment, width: step - Layout.labelPadding, size: Layout.smallSize, after: " ")
            body.lines(
                lines, x: Layout.leftMargin + step * (Double(index) + 0.5), y: plotTop + height + 15,
                size: Layout.smallSize, anchor: "middle", className: "moment-label")
            bottom = max(
                bottom, plotTop + height + 15 + Double(lines.count - 1) * Layout.smallSize * Layout.lineSpacing)
        }
        return bottom + 4
    }

    /// The caption: how to read the chart, what the family measures, and the run's machine
    /// and date. Returns its bottom.
    func drawCaption(_ body: inout SVGBody, top: Double) -> Double {
        let peers = AllocatorColumn.peers.map(\.name).joined(separator: ", ")
        var paragraphs = [
            "Bars: the median of the repetitions; whiskers: the fastest and the slowest. Time divides ns per "
                + "operation by the median of the fastest peer (\(peers)) on the same workload in the same run: "
                + "the black line at 1× is that peer.",
            "Unit: \(family.unit).",
        ]
        if !timelineGroups.isEmpty {
            paragraphs.insert(
                "RSS over the run: VmRSS read at each moment, median of the repetitions; the idle steps sleep with "
                    + "no allocator call. Moments are evenly spaced, not to scale (the burst and the frees take "
                    + "a fraction of a second).", at: 1)
        }
        let machine = results.machine.map { " (\($0))" } ?? ""
        let cpus = results.cpuCount == 1 ? "1 CPU" : "\(results.cpuCount) CPUs"
        let repetitions = results.repetitions == 1 ? "1 repetition" : "\(results.repetitions) repetitions"
        paragraphs.append(
            "Run: \(cpus)\(machine), \(results.scale.rawValue) scale, \(repetitions), measured \(results.date).")
        let lineHeight = Layout.smallSize * Layout.lineSpacing
        var y = top + 4
        body.line(
            x1: Layout.leftMargin, y1: y, x2: Layout.leftMargin + plotWidth, y2: y, stroke: "#cccccc", width: 1,
            className: "caption-rule")
        y += 16
        for paragraph in paragraphs {
            let lines = Layout.wrap(paragraph, width: plotWidth, size: Layout.smallSize, after: " ")
            body.lines(lines, x: Layout.leftMargin, y: y, size: Layout.smallSize, fill: "#444444", className: "caption")
            y += Double(lines.count) * lineHeight + 3
        }
        return y
    }

    /// A plot's grid, tick labels, left axis and rotated axis title; with `bands`, every
    /// other group's slot shaded, so that the eye follows a group from panel to panel.
    func drawFrame(
        _ body: inout SVGBody, scale: some ChartScale, top: Double, height: Double, axisTitle: String,
        bands: Bool = true
    ) {
        for (index, slot) in slots.enumerated() where bands && index % 2 == 1 {
            body.rect(x: slot.x, y: top, width: slot.width, height: height, fill: "#f6f6f6", className: "band")
        }
        for tick in scale.ticks {
            let y = scale.y(tick, top: top, height: height)
            body.line(
                x1: Layout.leftMargin, y1: y, x2: Layout.leftMargin + plotWidth, y2: y, stroke: "#dddddd", width: 1,
                className: "grid")
            body.text(
                scale.label(tick), x: Layout.leftMargin - 6, y: y + 4, size: Layout.smallSize, anchor: "end",
                fill: "#333333", className: "tick")
        }
        body.line(
            x1: Layout.leftMargin, y1: top, x2: Layout.leftMargin, y2: top + height, stroke: "#888888", width: 1,
            className: "axis")
        body.text(
            axisTitle, x: 20, y: top + height / 2, size: Layout.smallSize, anchor: "middle", fill: "#333333",
            className: "axis-title", rotated: true)
    }

    /// The workloads' names under a panel, centred on their groups. Returns the bottom.
    func drawGroupLabels(_ body: inout SVGBody, top: Double) -> Double {
        for (lines, slot) in zip(labels, slots) {
            body.lines(
                lines, x: slot.x + slot.width / 2, y: top + 15, size: Layout.smallSize, anchor: "middle",
                className: "workload-label")
        }
        let mostLines = Double(labels.map(\.count).max() ?? 1)
        return top + 15 + (mostLines - 1) * Layout.smallSize * Layout.lineSpacing + 4
    }

    /// The left edge of bar `index` of `count` bars centred in `slot`.
    func barX(slot: (x: Double, width: Double), count: Int, index: Int) -> Double {
        slot.x + (slot.width - Double(count) * Layout.barWidth) / 2 + Double(index) * Layout.barWidth
    }

    /// A figure for a tooltip: two decimals below 10, one below 100, none above.
    static func decimal(_ value: Double) -> String {
        Report.format(value, digits: value < 10 ? 2 : value < 100 ? 1 : 0)
    }
}

// MARK: - SVG text

/// The elements of an SVG document, as text. Every string that can come from the results is
/// escaped here, and nowhere else.
struct SVGBody {
    var text = ""

    /// `value` escaped for XML text and attribute values alike. Control characters, which
    /// XML 1.0 forbids even escaped, become U+FFFD (�).
    static func escaped(_ value: String) -> String {
        var result = ""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "&": result += "&amp;"
            case "<": result += "&lt;"
            case ">": result += "&gt;"
            case "\"": result += "&quot;"
            case "'": result += "&apos;"
            case "\t", "\n", "\r": result.unicodeScalars.append(scalar)
            case _ where scalar.value < 0x20 || scalar.value == 0xFFFE || scalar.value == 0xFFFF: result += "\u{FFFD}"
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result
    }

    /// A coordinate or length with two decimals: finer than any screen, and short.
    static func number(_ value: Double) -> String { String(format: "%.2f", value) }

    mutating func rect(x: Double, y: Double, width: Double, height: Double, fill: String, className: String) {
        text += "<rect class=\"\(className)\" x=\"\(Self.number(x))\" y=\"\(Self.number(y))\" "
        text += "width=\"\(Self.number(width))\" height=\"\(Self.number(height))\" fill=\"\(fill)\"/>\n"
    }

    /// A bar of a cell, with the cell's names and value as data attributes (what the tests
    /// read back) and a tooltip.
    mutating func bar(
        x: Double, y: Double, width: Double, height: Double, fill: String, className: String, workload: String,
        allocator: String, value: Double, tooltip: String
    ) {
        text += "<rect class=\"\(className)\" data-workload=\"\(Self.escaped(workload))\" "
        text += "data-allocator=\"\(Self.escaped(allocator))\" data-value=\"\(String(format: "%.6g", value))\" "
        text += "x=\"\(Self.number(x))\" y=\"\(Self.number(y))\" width=\"\(Self.number(width))\" "
        text += "height=\"\(Self.number(height))\" fill=\"\(fill)\"><title>\(Self.escaped(tooltip))</title></rect>\n"
    }

    /// A vertical min–max whisker with caps at both ends.
    mutating func whisker(
        x: Double, from y1: Double, to y2: Double, className: String, workload: String, allocator: String
    ) {
        let cap = 3.0
        text += "<path class=\"\(className)\" data-workload=\"\(Self.escaped(workload))\" "
        text += "data-allocator=\"\(Self.escaped(allocator))\" d=\"M\(Self.number(x)),\(Self.number(y1)) "
        text += "V\(Self.number(y2)) M\(Self.number(x - cap)),\(Self.number(y1)) H\(Self.number(x + cap)) "
        text += "M\(Self.number(x - cap)),\(Self.number(y2)) H\(Self.number(x + cap))\" "
        text += "stroke=\"#222222\" stroke-width=\"1.2\" fill=\"none\"/>\n"
    }

    mutating func line(
        x1: Double, y1: Double, x2: Double, y2: Double, stroke: String, width: Double, className: String
    ) {
        text += "<line class=\"\(className)\" x1=\"\(Self.number(x1))\" y1=\"\(Self.number(y1))\" "
        text += "x2=\"\(Self.number(x2))\" y2=\"\(Self.number(y2))\" stroke=\"\(stroke)\" "
        text += "stroke-width=\"\(Self.number(width))\"/>\n"
    }

    /// A line through `points` with a dot at each, and a tooltip.
    mutating func polyline(
        _ points: [(x: Double, y: Double)], stroke: String, className: String, workload: String, allocator: String,
        tooltip: String
    ) {
        let coordinates = points.map { "\(Self.number($0.x)),\(Self.number($0.y))" }.joined(separator: " ")
        text += "<g class=\"\(className)\" data-workload=\"\(Self.escaped(workload))\" "
        text += "data-allocator=\"\(Self.escaped(allocator))\"><title>\(Self.escaped(tooltip))</title>\n"
        text += "<polyline points=\"\(coordinates)\" fill=\"none\" stroke=\"\(stroke)\" stroke-width=\"2\"/>\n"
        for point in points {
            text += "<circle cx=\"\(Self.number(point.x))\" cy=\"\(Self.number(point.y))\" r=\"3.5\" "
            text += "fill=\"\(stroke)\" stroke=\"#ffffff\" stroke-width=\"1\"/>\n"
        }
        text += "</g>\n"
    }

    /// One line of text at (`x`, `y`), the baseline; `rotated` turns it a quarter left
    /// about that point (for a vertical axis title).
    mutating func text(
        _ content: String, x: Double, y: Double, size: Double, anchor: String = "start", weight: String = "normal",
        fill: String = "#111111", className: String, rotated: Bool = false
    ) {
        let transform = rotated ? " transform=\"rotate(-90 \(Self.number(x)) \(Self.number(y)))\"" : ""
        text += "<text class=\"\(className)\" x=\"\(Self.number(x))\" y=\"\(Self.number(y))\" "
        text += "font-size=\"\(Self.number(size))\" text-anchor=\"\(anchor)\" font-weight=\"\(weight)\" "
        text += "fill=\"\(fill)\"\(transform)>\(Self.escaped(content))</text>\n"
    }

    /// Lines of text, the first baseline at `y`, one under the other.
    mutating func lines(
        _ lines: [String], x: Double, y: Double, size: Double, anchor: String = "start", weight: String = "normal",
        fill: String = "#111111", className: String
    ) {
        text += "<text class=\"\(className)\" x=\"\(Self.number(x))\" y=\"\(Self.number(y))\" "
        text += "font-size=\"\(Self.number(size))\" text-anchor=\"\(anchor)\" font-weight=\"\(weight)\" "
        text += "fill=\"\(fill)\">"
        for (index, line) in lines.enumerated() {
            let dy = index == 0 ? 0 : size * Layout.lineSpacing
            text += "<tspan x=\"\(Self.number(x))\" dy=\"\(Self.number(dy))\">\(Self.escaped(line))</tspan>"
        }
        text += "</text>\n"
    }
}
