// swift-tools-version: 6.1
// A Swift executable that depends on BinnedAlloc by path and links the BinnedMalloc
// product, exactly as the README tells users: `make test-link-in` builds and runs it, and it
// checks that the whole process, the Swift runtime included, allocates from BinnedAlloc.
import PackageDescription

let package = Package(
    name: "LinkIn",
    dependencies: [.package(path: "../..")],
    targets: [
        .executableTarget(
            name: "LinkInCheck",
            dependencies: [
                .product(name: "BinnedAlloc", package: "BinnedAlloc"),
                .product(name: "BinnedMalloc", package: "BinnedAlloc"),
            ]
        )
    ],
    swiftLanguageModes: [.v6]
)
