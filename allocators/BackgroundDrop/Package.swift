// swift-tools-version: 6.1
// BackgroundDrop: hands values to background threads to be deinitialised there, so the caller never stalls.
import PackageDescription

let package = Package(
    name: "BackgroundDrop",
    products: [.library(name: "BackgroundDrop", targets: ["BackgroundDrop"])],
    dependencies: [.package(path: "../../shared")],
    targets: [
        .target(name: "BackgroundDrop", dependencies: [.product(name: "AllocCore", package: "shared")]),
        // Test support only: glibc's mallinfo2, to show that drops do not allocate.
        .target(name: "CMallocStatistics", path: "Tests/CMallocStatistics"),
        .testTarget(
            name: "BackgroundDropTests",
            dependencies: [
                "BackgroundDrop", "CMallocStatistics", .product(name: "AllocTestSupport", package: "shared"),
            ]),
    ],
    swiftLanguageModes: [.v6]
)
