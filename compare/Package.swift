// swift-tools-version: 6.1
// Compare: benchmarks of the project's allocators against glibc's allocator and jemalloc.
//
// Each (workload, allocator) cell runs in a child process whose malloc is the one under
// test: `compare-worker` runs on glibc (and on the project's allocators through their
// Swift APIs), `compare-worker-jemalloc` links libjemalloc, which makes jemalloc the
// allocator of that whole process, and `compare-worker-binnedmalloc` links BinnedMalloc,
// which does the same for BinnedAlloc. The `compare` driver spawns them, prints tables and
// draws charts (BenchCharts).
import PackageDescription

let package = Package(
    name: "Compare",
    products: [
        .executable(name: "compare", targets: ["compare"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(path: "../shared"),
        .package(path: "../allocators/BinnedAlloc"),
        .package(path: "../allocators/ArenaAlloc"),
        .package(path: "../allocators/RingAlloc"),
        .package(path: "../allocators/LargeAlloc"),
        .package(path: "../allocators/BackgroundDrop"),
    ],
    targets: [
        .systemLibrary(
            name: "CJemalloc",
            pkgConfig: "jemalloc",
            providers: [.apt(["libjemalloc-dev"])]
        ),
        .target(
            name: "Workloads",
            dependencies: [
                .product(name: "AllocCore", package: "shared"),
                .product(name: "BinnedAlloc", package: "BinnedAlloc"),
                .product(name: "ArenaAlloc", package: "ArenaAlloc"),
                .product(name: "RingAlloc", package: "RingAlloc"),
                .product(name: "LargeAlloc", package: "LargeAlloc"),
                .product(name: "BackgroundDrop", package: "BackgroundDrop"),
            ]
        ),
        .executableTarget(name: "compare-worker", dependencies: ["Workloads"]),
        .executableTarget(name: "compare-worker-jemalloc", dependencies: ["Workloads", "CJemalloc"]),
        // Links BinnedMalloc, which makes BinnedAlloc the allocator of that whole process.
        .executableTarget(
            name: "compare-worker-binnedmalloc",
            dependencies: ["Workloads", .product(name: "BinnedMalloc", package: "BinnedAlloc")]),
        // The charts (`compare --charts`) and the results file they are drawn from. A module of
        // their own: they need Foundation, which the workers that link Workloads do without (a
        // worker's RSS is measured, and Foundation would load into it).
        .target(name: "BenchCharts", dependencies: ["Workloads"]),
        .executableTarget(
            name: "compare",
            dependencies: [
                "Workloads",
                "BenchCharts",
                .product(name: "AllocCore", package: "shared"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "CompareTests",
            dependencies: ["Workloads", "BenchCharts", .product(name: "AllocCore", package: "shared")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
