// swift-tools-version: 6.1
// LargeAlloc: power-of-two large regions with per-thread caches, dirty and clean pools and a background worker.
import PackageDescription

let package = Package(
    name: "LargeAlloc",
    products: [.library(name: "LargeAlloc", targets: ["LargeAlloc"])],
    dependencies: [.package(path: "../../shared")],
    targets: [
        .target(
            name: "LargeAlloc", dependencies: [.product(name: "AllocCore", package: "shared")],
            // `Region.span` returns a `Span` bound to the region's lifetime (`@_lifetime`).
            swiftSettings: [.enableExperimentalFeature("Lifetimes")]),
        .testTarget(
            name: "LargeAllocTests",
            dependencies: ["LargeAlloc", .product(name: "AllocTestSupport", package: "shared")]),
    ],
    swiftLanguageModes: [.v6]
)
