// swift-tools-version: 6.1
// A Swift executable that depends on BinnedAlloc by path and links the BinnedMalloc
// product, exactly as the README tells users: `make test-link-in` builds and runs it, and it
// checks that the whole process, the Swift runtime included, allocates from BinnedAlloc.
import PackageDescription

let package = Package(
    name: "LinkIn",
    // `swift build --traits Hardened` builds the same executable over BinnedAlloc's hardened
    // build, as a user turns it on: the dependency's trait `Hardened`.
    traits: [.trait(name: "Hardened")],
    dependencies: [
        .package(path: "../..", traits: [.defaults, .trait(name: "Hardened", condition: .when(traits: ["Hardened"]))])
    ],
    targets: [
        .executableTarget(
            name: "LinkInCheck",
            dependencies: [
                .product(name: "BinnedAlloc", package: "BinnedAlloc"),
                .product(name: "BinnedMalloc", package: "BinnedAlloc"),
            ],
            swiftSettings: [.define("HARDENED", .when(traits: ["Hardened"]))]
        )
    ],
    swiftLanguageModes: [.v6]
)
