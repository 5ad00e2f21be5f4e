// swift-tools-version: 6.1
// BinnedAlloc: a size-class binned allocator with per-thread caches, lock-free fast paths
// and batched cross-thread frees; also exported to C under binned_* names.
import PackageDescription

let package = Package(
    name: "BinnedAlloc",
    products: [
        .library(name: "BinnedAlloc", targets: ["BinnedAlloc"]),
        // The LD_PRELOAD library: `make` builds it with the Swift runtime linked in
        // statically and only the malloc family exported (see the Makefile).
        .library(name: "binnedmalloc", type: .dynamic, targets: ["BinnedMalloc"]),
    ],
    dependencies: [
        .package(path: "../../shared")
    ],
    targets: [
        .target(name: "BinnedAlloc", dependencies: [.product(name: "AllocCore", package: "shared")]),
        // The standard malloc names over the binned_* family, with default visibility.
        .target(name: "BinnedMalloc", dependencies: ["BinnedAlloc"]),
        .testTarget(name: "BinnedAllocTests", dependencies: ["BinnedAlloc"]),
    ],
    swiftLanguageModes: [.v6]
)
