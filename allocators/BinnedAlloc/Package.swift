// swift-tools-version: 6.1
// BinnedAlloc: a size-class binned allocator with per-thread caches, lock-free fast paths
// and batched cross-thread frees; also exported to C under binned_* names.
import PackageDescription

/// The malloc family, as BinnedMalloc defines it. A Swift executable's own symbols are not
/// in the dynamic symbol table, so the shared libraries it loads (libswiftCore, libc,
/// libstdc++) would keep glibc's malloc: exporting every name makes BinnedAlloc the
/// allocator of the whole process. All of them: exporting only malloc and free leaves
/// libswiftCore calling glibc's malloc_usable_size on BinnedAlloc's blocks.
let mallocFamily = [
    "malloc", "free", "calloc", "realloc", "reallocarray", "posix_memalign", "aligned_alloc", "memalign",
    "valloc", "pvalloc", "malloc_usable_size", "free_sized", "free_aligned_sized",
    "malloc_trim", "mallopt", "malloc_info", "malloc_stats", "mallinfo", "mallinfo2",
]

let package = Package(
    name: "BinnedAlloc",
    products: [
        .library(name: "BinnedAlloc", targets: ["BinnedAlloc"]),
        // Link this into a Swift executable and BinnedAlloc serves the whole process,
        // the Swift runtime included: Swift's counterpart of Rust's #[global_allocator].
        .library(name: "BinnedMalloc", targets: ["BinnedMalloc"]),
        // The LD_PRELOAD library: `make` builds it with the Swift runtime linked in
        // statically and only the malloc family exported (see the Makefile).
        .library(name: "binnedmalloc", type: .dynamic, targets: ["BinnedMalloc"]),
    ],
    // `Hardened`: the checks of the hardened build (`Hardening` in BinnedAlloc.swift), off by
    // default. `make` builds libbinnedmalloc-hardened.so with it; a Swift executable gets them
    // by naming the trait Hardened in its own path dependency on this package (README).
    traits: [
        .trait(name: "Hardened", description: "Heap-misuse checks that cost time: seals, poison, encoded links.")
    ],
    dependencies: [
        .package(path: "../../shared")
    ],
    targets: [
        .target(
            name: "BinnedAlloc", dependencies: [.product(name: "AllocCore", package: "shared")],
            swiftSettings: [
                .define("BINNED_HARDENED", .when(traits: ["Hardened"])),
                // Optimized in debug builds too, with debug assertions kept: unoptimized generic
                // code instantiates type metadata, which allocates, and inside a process
                // allocator that would recurse into malloc before its state exists.
                .unsafeFlags(["-O", "-assert-config", "Debug"], .when(configuration: .debug)),
                // Every function starts on a 64-byte boundary. binned_malloc and
                // binned_free_any, the whole fast path of the standard malloc and free, are a
                // few dozen instructions each, and where the linker happened to put them moved
                // malloc(16 or 64)+free by 10% between builds of the same code (3.35 against
                // 3.64 ns a pair, medians of 9 runs; aligned: 3.1 to 3.5 ns at every size).
                .unsafeFlags(["-Xllvm", "-align-all-functions=6"], .when(configuration: .release)),
            ]),
        // The standard malloc names over the binned_* family, with default visibility, and
        // exported from the executable that links them.
        .target(
            name: "BinnedMalloc", dependencies: ["BinnedAlloc"],
            linkerSettings: [.unsafeFlags(mallocFamily.flatMap { ["-Xlinker", "--export-dynamic-symbol=\($0)"] })]
        ),
        .testTarget(
            name: "BinnedAllocTests",
            dependencies: ["BinnedAlloc", .product(name: "AllocTestSupport", package: "shared")]),
    ],
    swiftLanguageModes: [.v6]
)
