// swift-tools-version: 6.1
// AllocCore: the shared core of the allocators. Every OS call, atomic on raw memory,
// lock and thread-local slot of the project lives here.
import PackageDescription

let package = Package(
    name: "AllocCore",
    products: [
        .library(name: "AllocCore", targets: ["AllocCore"]),
        // What every package's tests share: seeds (ALLOC_TEST_SEED, the soak), threads,
        // exit-test checks, deinit tallies. For test targets only.
        .library(name: "AllocTestSupport", targets: ["AllocTestSupport"]),
    ],
    targets: [
        .target(name: "CAllocCore"),
        .target(
            name: "AllocCore", dependencies: ["CAllocCore"],
            // Optimized in debug builds too, with debug assertions kept: unoptimized generic
            // code instantiates type metadata, which allocates, and inside a process
            // allocator that would recurse into malloc before its state exists.
            swiftSettings: [.unsafeFlags(["-O", "-assert-config", "Debug"], .when(configuration: .debug))]),
        .target(name: "AllocTestSupport", dependencies: ["AllocCore"]),
        .testTarget(name: "AllocCoreTests", dependencies: ["AllocCore", "AllocTestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
