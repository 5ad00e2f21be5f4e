import BinnedAlloc
import Glibc

/// A class whose instances the Swift runtime allocates (swift_allocObject → malloc in
/// libswiftCore.so).
final class Node {
    var value: Int
    var next: Node?
    init(value: Int, next: Node?) {
        self.value = value
        self.next = next
    }
}

enum LinkInCheck {
    nonisolated(unsafe) static var failures = 0

    static func check(_ condition: Bool, _ what: String) {
        print("\(condition ? "ok  " : "FAIL") \(what)")
        if !condition { failures += 1 }
    }

    /// Live blocks of every size class, and large allocations, from BinnedAlloc's counters.
    static func liveBlocks() -> Int {
        let statistics = BinnedAllocator.shared.statistics()
        return statistics.sizeClasses.reduce(0) { $0 + $1.liveBlocks }
            + statistics.largeAllocations - statistics.largeDeallocations
    }

    static func allocations() -> Int {
        BinnedAllocator.shared.statistics().sizeClasses.reduce(0) { $0 + $1.allocations }
    }

    /// The file mapped at `address`, from /proc/self/maps.
    static func mappingPath(of address: UnsafeRawPointer?) -> String {
        guard let address, let maps = fopen("/proc/self/maps", "r") else { return "(unknown)" }
        defer { fclose(maps) }
        let target = UInt(bitPattern: address)
        var line: UnsafeMutablePointer<CChar>? = nil
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, maps) > 0 {
            let fields = String(cString: line!).split(separator: " ", omittingEmptySubsequences: true)
            let bounds = fields[0].split(separator: "-").compactMap { UInt($0, radix: 16) }
            if bounds.count == 2, bounds[0] <= target, target < bounds[1] {
                return fields.count >= 6 ? String(fields[5].dropLast(fields[5].hasSuffix("\n") ? 1 : 0)) : "(anonymous)"
            }
        }
        return "(unmapped)"
    }

    static func run() -> Never {
        // 1. Every name of the family resolves, for every library, to this executable.
        let names = [
            "malloc", "free", "calloc", "realloc", "reallocarray", "posix_memalign", "aligned_alloc", "memalign",
            "valloc", "pvalloc", "malloc_usable_size", "free_sized", "free_aligned_sized",
            "malloc_trim", "mallopt", "malloc_info", "malloc_stats", "mallinfo", "mallinfo2",
        ]
        let executablePath = mappingPath(of: UnsafeRawPointer(bitPattern: UInt(bitPattern: #dsohandle)))
        for name in names {
            let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), name)  // RTLD_DEFAULT
            let object = symbol.map { mappingPath(of: UnsafeRawPointer($0)) } ?? "(unresolved)"
            check(object == executablePath, "\(name) resolves to the executable (\(object))")
        }

        // 2. The Swift runtime's allocations are BinnedAlloc's: 100,000 class instances
        // (allocated by libswiftCore) raise the live-block count by at least as much.
        let before = liveBlocks()
        var list: Node? = nil
        for value in 0..<100_000 { list = Node(value: value, next: list) }
        let during = liveBlocks()
        check(during - before >= 100_000, "100,000 Swift objects are 100,000 BinnedAlloc blocks (\(during - before))")
        var sum = 0
        var node = list
        while let current = node {
            sum &+= current.value
            node = current.next
        }
        // Freed iteratively, so a long chain does not recurse in deinit.
        while let current = list {
            list = current.next
            current.next = nil
        }
        check(sum == 4_999_950_000, "the objects kept their contents")
        check(liveBlocks() - before < 1_000, "freeing them frees BinnedAlloc blocks (\(liveBlocks() - before) left)")

        // 3. Arrays, strings and dictionaries (stdlib buffers, grown by realloc/malloc).
        let allocationsBefore = allocations()
        var strings: [String] = []
        var table: [String: [Int]] = [:]
        for index in 0..<10_000 {
            let key = "key number \(index) with a tail long enough to be heap-allocated"
            strings.append(key)
            table[key, default: []].append(index)
        }
        check(
            allocations() - allocationsBefore >= 20_000,
            "strings, arrays and dictionaries allocate from BinnedAlloc (\(allocations() - allocationsBefore))")
        check(table.count == 10_000 && strings.last!.hasSuffix("heap-allocated"), "their contents are intact")

        // 4. libc's own allocations (strdup) are BinnedAlloc blocks that free accepts.
        let copy = strdup("a string copied by libc")!
        check(BinnedAllocator.shared.usableSize(of: copy) >= 24, "strdup's block is a BinnedAlloc block")
        free(copy)

        // 5. Threads: each allocates Swift objects and exits; their caches are parked.
        var threads: [pthread_t] = []
        for _ in 0..<8 {
            var thread = pthread_t()
            pthread_create(
                &thread, nil,
                { _ in
                    var nodes: [Node] = []
                    for value in 0..<10_000 { nodes.append(Node(value: value, next: nil)) }
                    return nodes.count == 10_000 ? nil : UnsafeMutableRawPointer(bitPattern: 1)
                }, nil)
            threads.append(thread)
        }
        var threadFailures = 0
        for thread in threads {
            var result: UnsafeMutableRawPointer? = nil
            pthread_join(thread, &result)
            if result != nil { threadFailures += 1 }
        }
        let statistics = BinnedAllocator.shared.statistics()
        check(
            threadFailures == 0 && statistics.threadCaches >= 2,
            "threads allocate from BinnedAlloc (\(statistics.threadCaches) thread caches)")

        // 6. glibc's extra entry points answer from BinnedAlloc's numbers (called through
        // dlsym: the Glibc module does not import malloc.h).
        typealias Trim = @convention(c) (Int) -> Int32
        let trim = unsafeBitCast(dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim"), to: Trim.self)
        let liveBefore = binned_statistic("live_bytes")
        let big = malloc(8 << 20)!
        memset(big, 1, 8 << 20)
        check(binned_statistic("live_bytes") - liveBefore >= 8 << 20, "live_bytes counts an 8 MiB block")
        free(big)
        check(trim(0) == 1, "malloc_trim gives the freed 8 MiB block back")

        // 7. Built with the trait Hardened, the process runs BinnedAlloc's hardened build: a
        // block's usable size is what was asked, and a 1-byte overflow stops a child at its free.
        #if HARDENED
            let block = malloc(10)!
            check(BinnedAllocator.shared.usableSize(of: block) == 10, "hardened: malloc(10) has 10 usable bytes")
            free(block)
            let child = fork()
            if child == 0 {
                dup2(open("/dev/null", O_WRONLY), 2)  // the report line is expected
                let victim = malloc(24)!.assumingMemoryBound(to: UInt8.self)
                victim[24] = 0x44
                free(victim)
                _exit(0)
            }
            var status: Int32 = 0
            waitpid(child, &status, 0)
            check(status & 0x7F == SIGABRT, "hardened: a 1-byte overflow aborts the process at free")
        #else
            let block = malloc(10)!
            check(
                BinnedAllocator.shared.usableSize(of: block) == 16,
                "default: malloc(10) has its class's 16 usable bytes")
            free(block)
        #endif

        print("link-in: \(failures == 0 ? 1 : 0) passed, \(failures == 0 ? 0 : 1) failed")
        exit(failures == 0 ? 0 : 1)
    }
}
