// The chart writer on small fixed result sets: the SVG is well-formed XML, each (workload,
// allocator) cell has one bar per panel whose height is the one its ratio or size implies,
// whiskers span the repetitions, names are escaped, and a results file round-trips.

import Foundation
import FoundationXML
import Testing

@testable import BenchCharts
@testable import Workloads

/// An SVG document parsed by Foundation's XMLParser: every element with its attributes and
/// the text inside it (its children's included). nil when the text is not well-formed XML.
final class ParsedSVG: NSObject, XMLParserDelegate {
    struct Element {
        let name: String
        let attributes: [String: String]
        var text = ""
    }

    private(set) var elements: [Element] = []
    private var open: [Int] = []
    private var failed = false

    init?(_ svg: String) {
        super.init()
        let parser = XMLParser(data: Data(svg.utf8))
        parser.delegate = self
        guard parser.parse(), !failed else { return nil }
    }

    func parser(
        _ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName: String?,
        attributes: [String: String]
    ) {
        open.append(elements.count)
        elements.append(Element(name: elementName, attributes: attributes))
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) {
        for index in open { elements[index].text += string }
    }

    func parser(
        _ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName: String?
    ) {
        open.removeLast()
    }

    func parser(_ parser: XMLParser, parseErrorOccurred parseError: any Error) { failed = true }

    /// The elements whose class attribute is `className`.
    func elements(ofClass className: String) -> [Element] {
        elements.filter { $0.attributes["class"] == className }
    }

    /// The element of `className` drawn for one cell.
    func element(ofClass className: String, workload: String, allocator: String) -> Element? {
        elements(ofClass: className).first {
            $0.attributes["data-workload"] == workload && $0.attributes["data-allocator"] == allocator
        }
    }
}

extension ParsedSVG.Element {
    /// A numeric attribute; 0 when it is absent, which no assertion below expects.
    func number(_ attribute: String) -> Double { attributes[attribute].flatMap(Double.init) ?? 0 }

    /// The two ends (y) of a whisker drawn as `M x,y1 V y2 …`.
    var whiskerEnds: (Double, Double)? {
        let parts = (attributes["d"] ?? "").split(separator: " ")
        guard parts.count > 1, let y1 = parts[0].split(separator: ",").last.flatMap({ Double($0) }),
            let y2 = Double(parts[1].dropFirst())
        else { return nil }
        return (y1, y2)
    }
}

@Suite struct ChartTests {
    /// A family whose names need escaping, with a workload whose name does too.
    static let oddFamily = Workload.Family(
        title: "Odd <names> & \"quotes\" 'too'", unit: "ns per <operation> & more")
    static let oddWorkload = "w<1>&\"'"
    static let oddAllocator = "odd <alloc> & \"co\""
    static let workloads = [
        Workload(name: oddWorkload, family: oddFamily, kind: .pairs(size: 16), operations: 1000),
        Workload(name: "plain-2", family: oddFamily, kind: .pairs(size: 16), operations: 1000),
    ]

    static func sample(
        _ workload: String, _ allocator: String, nanosecondsPerOperation: UInt64, peakMiB: Int = 8,
        extras: [String: Double] = [:]
    ) -> Sample {
        Sample(
            workload: workload, allocator: allocator, repetition: 1,
            measurement: Measurement(
                nanoseconds: nanosecondsPerOperation * 1000, operations: 1000, checksum: 0, extras: extras),
            peakResidentBytes: peakMiB << 20, userNanoseconds: 0, systemNanoseconds: 0)
    }

    static func results(_ samples: [Sample], machine: String? = "test machine") -> Results {
        Results(
            date: "2026-01-02T03:04:05Z", scale: .quick, repetitions: 3, cpuCount: 2, machine: machine,
            samples: samples)
    }

    /// Ratios against each workload's best peer, in the order below: on the odd workload 1, 2,
    /// 4 (glibc's median; its repetitions 2, 4 and 8) and 0.5; on the plain one 2, 1 and 4.
    static let fixedResults = results([
        sample(oddWorkload, "jemalloc", nanosecondsPerOperation: 10, peakMiB: 16),
        sample(oddWorkload, "mimalloc", nanosecondsPerOperation: 20, peakMiB: 4),
        sample(oddWorkload, "glibc", nanosecondsPerOperation: 20),
        sample(oddWorkload, "glibc", nanosecondsPerOperation: 40),
        sample(oddWorkload, "glibc", nanosecondsPerOperation: 80),
        sample(oddWorkload, oddAllocator, nanosecondsPerOperation: 5),
        sample("plain-2", "jemalloc", nanosecondsPerOperation: 8),
        sample("plain-2", "tcmalloc", nanosecondsPerOperation: 4),
        sample("plain-2", "glibc", nanosecondsPerOperation: 16),
    ])

    static func fixedChart() throws -> ParsedSVG {
        let charts = Charts.draw(fixedResults, workloads: workloads)
        try #require(charts.count == 1)
        return try #require(ParsedSVG(charts[0].svg), "the chart is not well-formed XML:\n\(charts[0].svg)")
    }

    @Test func theChartIsAnSVGDocumentWithOneBarPerCellInEachPanel() throws {
        let svg = try Self.fixedChart()
        #expect(svg.elements.first?.name == "svg")
        #expect(svg.elements.first?.attributes["xmlns"] == "http://www.w3.org/2000/svg")
        let cells = Set(Self.fixedResults.samples.map { "\($0.workload)|\($0.allocator)" })
        #expect(cells.count == 7)
        for className in ["bar time", "bar rss", "whisker time", "whisker rss"] {
            let drawn = svg.elements(ofClass: className).map {
                "\($0.attributes["data-workload"] ?? "")|\($0.attributes["data-allocator"] ?? "")"
            }
            #expect(drawn.count == cells.count, "\(className): \(drawn)")
            #expect(Set(drawn) == cells, "\(className)")
        }
        #expect(svg.elements(ofClass: "unity").count == 1)
    }

    /// On the log scale a bar's height is proportional to |log(ratio)|: 2× and 0.5× are as
    /// tall as each other, 4× twice as tall, 1× flat; slower bars stand on the 1× line,
    /// faster ones hang from it.
    @Test func timeBarsHaveTheHeightTheirRatioImplies() throws {
        let svg = try Self.fixedChart()
        let unity = try #require(svg.elements(ofClass: "unity").first).number("y1")
        func bar(_ workload: String, _ allocator: String) throws -> ParsedSVG.Element {
            try #require(svg.element(ofClass: "bar time", workload: workload, allocator: allocator))
        }
        let double = try bar(Self.oddWorkload, "mimalloc")
        let unit = double.number("height")
        #expect(unit > 20)
        #expect(abs(double.number("y") + unit - unity) < 0.02)
        #expect(abs(try bar(Self.oddWorkload, "glibc").number("height") - 2 * unit) < 0.02)
        #expect(try bar(Self.oddWorkload, "jemalloc").number("height") == 0)
        let half = try bar(Self.oddWorkload, Self.oddAllocator)
        #expect(abs(half.number("height") - unit) < 0.02)
        #expect(abs(half.number("y") - unity) < 0.02)
        #expect(abs(try bar("plain-2", "jemalloc").number("height") - unit) < 0.02)
        #expect(abs(try bar("plain-2", "glibc").number("height") - 2 * unit) < 0.02)
        #expect(try bar("plain-2", "tcmalloc").number("height") == 0)
        #expect(try bar("plain-2", "glibc").attributes["data-value"] == "4")
    }

    /// glibc's repetitions on the odd workload take 2, 4 and 8 times the best peer's median:
    /// its whisker runs from the 2× height to the 8× height.
    @Test func whiskersSpanTheFastestAndSlowestRepetition() throws {
        let svg = try Self.fixedChart()
        let unity = try #require(svg.elements(ofClass: "unity").first).number("y1")
        let unit = try #require(svg.element(ofClass: "bar time", workload: Self.oddWorkload, allocator: "mimalloc"))
            .number("height")
        let whisker = try #require(
            svg.element(ofClass: "whisker time", workload: Self.oddWorkload, allocator: "glibc")?.whiskerEnds)
        #expect(abs(whisker.0 - (unity - unit)) < 0.02)
        #expect(abs(whisker.1 - (unity - 3 * unit)) < 0.02)
        let single = try #require(
            svg.element(ofClass: "whisker time", workload: "plain-2", allocator: "jemalloc")?.whiskerEnds)
        #expect(single.0 == single.1)
    }

    /// RSS bars start at zero: 16 MiB stands twice as tall as 8 MiB and four times 4 MiB.
    @Test func residentBarsAreProportionalToPeakRSS() throws {
        let svg = try Self.fixedChart()
        func bar(_ allocator: String) throws -> ParsedSVG.Element {
            try #require(svg.element(ofClass: "bar rss", workload: Self.oddWorkload, allocator: allocator))
        }
        let sixteen = try bar("jemalloc")
        let eight = try bar("glibc")
        let four = try bar("mimalloc")
        #expect(abs(sixteen.number("height") - 2 * eight.number("height")) < 0.02)
        #expect(abs(sixteen.number("height") - 4 * four.number("height")) < 0.02)
        #expect(abs(sixteen.number("y") + sixteen.number("height") - (four.number("y") + four.number("height"))) < 0.02)
    }

    /// Names with <, & and quotes are escaped in text and attributes: the raw text never
    /// holds them unescaped, and the parser gives them back whole.
    @Test func namesAreEscaped() throws {
        let svgText = Charts.draw(Self.fixedResults, workloads: Self.workloads)[0].svg
        #expect(!svgText.contains("<names>") && !svgText.contains("<alloc>") && !svgText.contains("w<1>"))
        #expect(svgText.contains("odd &lt;alloc&gt; &amp; &quot;co&quot;"))
        let svg = try Self.fixedChart()
        #expect(svg.elements(ofClass: "legend").contains { $0.text == Self.oddAllocator })
        #expect(svg.elements.first { $0.name == "title" }?.text == Self.oddFamily.title)
        #expect(svg.elements.first?.attributes["aria-label"] == Self.oddFamily.title)
        #expect(svg.elements(ofClass: "caption").contains { $0.text.contains("ns per <operation> & more") })
        #expect(svg.element(ofClass: "bar time", workload: Self.oddWorkload, allocator: Self.oddAllocator) != nil)
        // A control character, which XML cannot hold even escaped, is replaced.
        #expect(SVGBody.escaped("a\u{1}b\u{FFFF}") == "a\u{FFFD}b\u{FFFD}")
        let control = Self.results([Self.sample("plain-2", "bell\u{7}", nanosecondsPerOperation: 5)])
        #expect(ParsedSVG(Charts.draw(control, workloads: Self.workloads)[0].svg) != nil)
    }

    /// An allocator has the same colour in every chart, and no two catalogue columns share one.
    @Test func coloursAreFixedPerAllocator() throws {
        let svg = try Self.fixedChart()
        let fill = svg.element(ofClass: "bar time", workload: "plain-2", allocator: "jemalloc")?.attributes["fill"]
        #expect(fill == Charts.colour(of: "jemalloc"))
        #expect(
            svg.element(ofClass: "bar rss", workload: Self.oddWorkload, allocator: "jemalloc")?.attributes["fill"]
                == fill)
        let columns = AllocatorColumn.all.map(\.name)
        #expect(Set(columns.map(Charts.colour(of:))).count == columns.count)
        #expect(Charts.colour(of: "glibc") == "#6e6e6e")
        #expect(Charts.colour(of: Self.oddAllocator) == Charts.colour(of: Self.oddAllocator))
    }

    /// A workload no peer ran keeps its RSS bars and says why it has no time bars.
    @Test func aWorkloadWithoutPeerHasNoTimeBars() throws {
        let results = Self.results([Self.sample("plain-2", "glibc", nanosecondsPerOperation: 5)])
        let svg = try #require(ParsedSVG(Charts.draw(results, workloads: Self.workloads)[0].svg))
        #expect(svg.elements(ofClass: "bar time").isEmpty)
        #expect(svg.elements(ofClass: "bar rss").count == 1)
        #expect(svg.elements(ofClass: "no-peer").count == 1)
    }

    /// Burst then idle adds its RSS readings as one line per allocator through the five
    /// moments, higher where more is resident.
    @Test func burstThenIdleDrawsRSSOverTime() throws {
        let readings = ["rss.before": 10.0, "rss.burst": 500, "rss.freed": 300, "rss.delay1": 100, "rss.delay2": 12]
        let burst = Workload.all.filter { $0.family == .burstIdle }
        let name = try #require(burst.first?.name)
        let results = Self.results([
            Self.sample(name, "glibc", nanosecondsPerOperation: 30, extras: readings),
            Self.sample(name, "jemalloc", nanosecondsPerOperation: 20, extras: readings),
        ])
        let chart = try #require(Charts.draw(results, workloads: burst).first)
        #expect(chart.fileName == "burst-then-idle.svg")
        let svg = try #require(ParsedSVG(chart.svg))
        let lines = svg.elements(ofClass: "timeline")
        #expect(lines.map { $0.attributes["data-allocator"] } == ["glibc", "jemalloc"])
        let circles = svg.elements.filter { $0.name == "circle" }.map { $0.number("cy") }
        #expect(circles.count == 10)
        // glibc's points: before (10 MiB) lowest, the burst (500 MiB) highest, then down.
        #expect(
            circles[1] < circles[2] && circles[2] < circles[3] && circles[3] < circles[4] && circles[4] < circles[0])
        #expect(svg.elements(ofClass: "moment-label").count == Charts.burstIdleTimeline.count)
        let keys = Set(Workload.Family.burstIdle.extras.map(\.key))
        #expect(Charts.burstIdleTimeline.allSatisfy { keys.contains($0.key) })
        // Other families have no timeline, and results without readings draw none.
        let plain = Self.results([Self.sample(name, "jemalloc", nanosecondsPerOperation: 20)])
        #expect(
            try #require(ParsedSVG(Charts.draw(plain, workloads: burst)[0].svg)).elements(ofClass: "timeline").isEmpty)
    }

    /// What `compare --json` writes, `--from` reads back whole, and draws the same charts from.
    @Test func resultsRoundTripThroughTheFile() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("chart-tests-\(getpid())")
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("nested/results.json").path
        try Self.fixedResults.write(to: path)
        let loaded = try Results.load(from: path)
        #expect(loaded == Self.fixedResults)
        #expect(
            Charts.draw(loaded, workloads: Self.workloads) == Charts.draw(Self.fixedResults, workloads: Self.workloads))
        let withoutMachine = Self.results(Self.fixedResults.samples, machine: nil)
        try withoutMachine.write(to: path)
        #expect(try Results.load(from: path) == withoutMachine)
        let written = try Charts.write(
            loaded, into: directory.appendingPathComponent("charts").path, workloads: Self.workloads)
        #expect(written.map { URL(fileURLWithPath: $0).lastPathComponent } == ["odd-names-quotes-too.svg"])
        #expect(
            try String(contentsOfFile: written[0], encoding: .utf8)
                == Charts.draw(loaded, workloads: Self.workloads)[0].svg)
    }

    /// Bad files give an error that names the file and the field.
    @Test func badFilesSayWhatIsWrong() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("chart-bad-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let header = "\"date\": \"d\", \"scale\": \"full\", \"repetitions\": 1, \"cpuCount\": 2"
        let sample =
            "\"allocator\": \"glibc\", \"checksum\": 0, \"extras\": {}, \"peakResidentBytes\": 1, \"repetition\": 1, "
            + "\"systemNanoseconds\": 0, \"userNanoseconds\": 0, \"workload\": \"pairs-16\""
        let cases = [
            ("not json", "is not a JSON results file of compare"),
            ("{\(header)}", "lacks the field samples"),
            ("{\(header), \"samples\": []}", "has no samples"),
            ("{\(header), \"samples\": [{\"workload\": \"pairs-16\"}]}", "lacks the field samples[0].allocator"),
            (
                "{\(header), \"samples\": [{\(sample), \"nanoseconds\": \"fast\", \"operations\": 1}]}",
                "has a bad value at samples[0].nanoseconds"
            ),
            (
                "{\(header), \"samples\": [{\(sample), \"nanoseconds\": 5, \"operations\": 0}]}",
                "has samples[0] with 0 operations"
            ),
            (
                "{\"date\": \"d\", \"scale\": \"huge\", \"repetitions\": 1, \"cpuCount\": 2, \"samples\": []}",
                "has a bad value at scale"
            ),
        ]
        for (index, (text, expected)) in cases.enumerated() {
            let path = directory.appendingPathComponent("bad-\(index).json").path
            try Data(text.utf8).write(to: URL(fileURLWithPath: path))
            let error = #expect(throws: ResultsFileError.self) { try Results.load(from: path) }
            #expect(error?.path == path)
            #expect(error?.description.hasPrefix(path + " " + expected) == true, "\(error?.description ?? "")")
        }
        let missing = directory.appendingPathComponent("missing.json").path
        let error = #expect(throws: ResultsFileError.self) { try Results.load(from: missing) }
        #expect(error?.problem.hasPrefix("cannot be read") == true)
    }

    /// The excerpt of a real run under Tests/Fixtures (what `make test-all`'s browser check
    /// draws) still loads, and draws the pairs chart and the burst-then-idle chart.
    @Test func theCheckedInFixtureDraws() throws {
        let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/bench-excerpt.json")
        let results = try Results.load(from: fixture.path)
        let charts = Charts.draw(results)
        #expect(charts.map(\.fileName) == ["small-object-pairs.svg", "burst-then-idle.svg"])
        for chart in charts { #expect(ParsedSVG(chart.svg) != nil, "\(chart.fileName)") }
        #expect(Charts.workloadsWithoutChart(in: results).isEmpty)
        var renamed = results
        renamed.samples[0].workload = "pairs-16-renamed"
        #expect(Charts.workloadsWithoutChart(in: renamed) == ["pairs-16-renamed"])
    }

    /// Chart file names are short, distinct, and stable for the documents that link them.
    @Test func fileNamesComeFromTheFamilyTitles() {
        let names = Workload.families().map(Charts.fileName(of:))
        #expect(Set(names).count == names.count)
        #expect(names.allSatisfy { $0.wholeMatch(of: /[a-z0-9]+(-[a-z0-9]+)*\.svg/) != nil })
        #expect(names.contains("small-object-pairs.svg") && names.contains("thread-churn.svg"))
        #expect(Charts.fileName(of: .burstIdle) == "burst-then-idle.svg")
    }

    /// The log scale covers every ratio and 1 within 1-2-5 bounds, and labels its ticks.
    @Test func ratioScaleBoundsAndTicks() {
        let narrow = RatioScale(covering: [0.8, 2.6])
        #expect(narrow.lowest == 0.5 && narrow.highest == 5)
        #expect(narrow.ticks == [0.5, 1, 2, 5])
        #expect(narrow.ticks.map(narrow.label) == ["0.5×", "1×", "2×", "5×"])
        let wide = RatioScale(covering: [0.0004, 1.1])
        #expect(wide.lowest == 0.0002 && wide.highest == 2)
        #expect(wide.ticks.map(wide.label) == ["0.001×", "0.01×", "0.1×", "1×"])
        let zero = RatioScale(covering: [0, 3])
        #expect(zero.lowest == 0.5 && zero.y(0, top: 0, height: 100) == 100)
        let size = SizeScale(covering: [3, 517])
        #expect(size.step == 200 && size.highest == 600)
    }

    /// Labels break after hyphens (or spaces) to fit; a piece too long for any line stays whole.
    @Test func labelsWrapAtTheirSeparators() {
        let lines = Layout.wrap("random-8-16384-ws10000-t1", width: 100, size: 11, after: "-")
        #expect(lines == ["random-8-16384-", "ws10000-t1"])
        #expect(Layout.wrap("a b c", width: 1000, size: 11, after: " ") == ["a b c"])
        #expect(Layout.wrap("unbreakable", width: 10, size: 11, after: " ") == ["unbreakable"])
    }
}
