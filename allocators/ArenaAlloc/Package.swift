// swift-tools-version: 6.1
// ArenaAlloc: a bump arena with reset, a thread-safe shared arena, local arenas fed by it, an arena cache and values deinitialised on reset.
import PackageDescription

// `Lifetimes` enables `@_lifetime`, which the non-escapable scope references need
// (`ArenaScope`, `ArenaRef`, `ArenaSpan`); clients of the module do not need it.
let package = Package(
    name: "ArenaAlloc",
    products: [.library(name: "ArenaAlloc", targets: ["ArenaAlloc"])],
    dependencies: [.package(path: "../../shared")],
    targets: [
        .target(
            name: "ArenaAlloc", dependencies: [.product(name: "AllocCore", package: "shared")],
            swiftSettings: [.enableExperimentalFeature("Lifetimes")]),
        .testTarget(
            name: "ArenaAllocTests",
            dependencies: ["ArenaAlloc", .product(name: "AllocTestSupport", package: "shared")]),
    ],
    swiftLanguageModes: [.v6]
)
