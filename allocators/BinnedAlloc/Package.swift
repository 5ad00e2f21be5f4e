// swift-tools-version: 6.1
// BinnedAlloc: a size-class binned allocator with per-thread caches, lock-free fast paths
// and batched cross-thread frees; also exported to C under binned_* names.
import PackageDescription

let package = Package(
    name: "BinnedAlloc",
    products: [
        .library(name: "BinnedAlloc", targets: ["BinnedAlloc"])
    ],
    dependencies: [
        .package(path: "../../shared")
    ],
    targets: [
        .target(name: "BinnedAlloc", dependencies: [.product(name: "AllocCore", package: "shared")]),
        .testTarget(name: "BinnedAllocTests", dependencies: ["BinnedAlloc"]),
    ],
    swiftLanguageModes: [.v6]
)
