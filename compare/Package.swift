// swift-tools-version: 6.1
// Compare: benchmarks of the project's allocators against glibc's allocator and jemalloc.
//
// Each (workload, allocator) cell runs in a child process whose malloc is the one under
// test: `compare-worker` runs on glibc (and on the project's allocators through their
// Swift APIs), `compare-worker-jemalloc` links libjemalloc, which makes jemalloc the
// allocator of that whole process. The `compare` driver spawns them and prints tables.
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
            ]
        ),
        .executableTarget(name: "compare-worker", dependencies: ["Workloads"]),
        .executableTarget(name: "compare-worker-jemalloc", dependencies: ["Workloads", "CJemalloc"]),
        .executableTarget(
            name: "compare",
            dependencies: [
                "Workloads",
                .product(name: "AllocCore", package: "shared"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "CompareTests",
            dependencies: ["Workloads", .product(name: "AllocCore", package: "shared")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
