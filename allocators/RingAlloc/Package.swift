// swift-tools-version: 6.1
// RingAlloc: a ring allocator with guard words for short-lived buffers, released from any thread.
import PackageDescription

let package = Package(
    name: "RingAlloc",
    products: [.library(name: "RingAlloc", targets: ["RingAlloc"])],
    dependencies: [.package(path: "../../shared")],
    targets: [
        .target(
            name: "RingAlloc", dependencies: [.product(name: "AllocCore", package: "shared")],
            // The buffers' `bytes`, `mutableBytes`, `span` and `mutableSpan` return spans bound
            // to the buffer's lifetime (`@_lifetime`), which Swift 6.3 accepts only with this.
            swiftSettings: [.enableExperimentalFeature("Lifetimes")]),
        .testTarget(
            name: "RingAllocTests", dependencies: ["RingAlloc", .product(name: "AllocTestSupport", package: "shared")]),
    ],
    swiftLanguageModes: [.v6]
)
