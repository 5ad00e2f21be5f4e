// Real programs with the allocator of each column preloaded: the process-level
// comparison a user of LD_PRELOAD cares about (python3's own test suite, for one).

import AllocCore
import Glibc

enum Programs {
    /// What goes in LD_PRELOAD for `column`: nothing for glibc, Debian's library for a
    /// peer (jemalloc, mimalloc, tcmalloc), the hardened library where the column's process
    /// finds it (`ProcessAllocator.libraryPath`), and libbinnedmalloc.so from
    /// `BINNEDMALLOC_LIBRARY` (`make bench` sets it), else from where `make preload` puts
    /// it beside this checkout.
    static func preload(for column: AllocatorColumn) -> String? {
        switch column.process {
        case .glibc: return nil
        case .jemalloc, .mimalloc, .tcmalloc, .binnedMallocHardened: return column.process.libraryPath
        case .binnedMalloc:
            if let path = getenv("BINNEDMALLOC_LIBRARY") { return String(cString: path) }
            return "allocators/BinnedAlloc/.build-preload/release/libbinnedmalloc.so"
        }
    }

    /// Runs the program once to warm the page cache (full runs), then once timed; the
    /// checksum is 0 for every column (a run that fails stops the benchmark).
    static func measure(_ arguments: [String], column: AllocatorColumn, scale: Scale) -> Measurement {
        guard let executable = find(arguments[0]) else { fatalError("\(arguments[0]) is not on the PATH") }
        var environment: [String: String] = [:]
        if let library = preload(for: column) {
            guard access(library, R_OK) == 0 else {
                fatalError("\(library) is missing: build it with `make preload` or set BINNEDMALLOC_LIBRARY")
            }
            environment["LD_PRELOAD"] = library
        }
        func run() -> (nanoseconds: UInt64, peak: Int) {
            let start = SystemInfo.monotonicNanoseconds()
            let result: ChildProcessResult
            do {
                result = try ChildProcess.run(
                    executable, arguments: Array(arguments.dropFirst()), environment: environment)
            } catch { fatalError("cannot run \(executable): \(error)") }
            let elapsed = SystemInfo.monotonicNanoseconds() - start
            guard result.succeeded else {
                fatalError(
                    "\(arguments.joined(separator: " ")) failed on \(column.name): \(result.errorText.suffix(2000))")
            }
            return (elapsed, result.maximumResidentBytesIncludingParent)
        }
        if scale == .full { _ = run() }
        let (nanoseconds, peak) = run()
        return Measurement(nanoseconds: nanoseconds, operations: 1, checksum: 0, peakResidentBytes: peak)
    }

    /// The script of python3-json-build-parse, for `python3 -c`: 3 times, a list of
    /// `elements` dicts of every JSON type (no randomness: the same document on every
    /// column) built, serialised with json.dumps and dropped, the string parsed back with
    /// json.loads and the name of its middle element checked, then the string and the
    /// parsed list dropped. At 120,000 elements the string is 11 MiB and python3's peak RSS
    /// about 115 MiB on glibc (200,000 gave 182 MiB, and 306 MiB with the list kept while
    /// parsing).
    static func jsonBuildParseScript(elements: Int) -> String {
        """
        import json
        n = \(elements)
        for _ in range(3):
            document = [
                {"id": i, "name": "item-%d" % i, "price": i * 0.25,
                 "tags": ["t%d" % (i % 7), "u%d" % (i % 13)], "dims": [i % 10, i % 100, i % 1000]}
                for i in range(n)
            ]
            text = json.dumps(document)
            del document
            parsed = json.loads(text)
            if parsed[n // 2]["name"] != "item-%d" % (n // 2):
                raise SystemExit("json.loads(json.dumps(document)) changed element %d" % (n // 2))
            del text, parsed
        """
    }

    /// The path of `name` on the PATH.
    static func find(_ name: String) -> String? {
        guard let path = getenv("PATH") else { return nil }
        for directory in String(cString: path).split(separator: ":") {
            let candidate = "\(directory)/\(name)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }
}
