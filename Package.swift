// swift-tools-version: 6.0
// Frugal: a native Swift engine that fine-tunes language models on one GPU or a CPU.
import PackageDescription

/// The hot loops (ops, dequantization, tokenization) are optimized even in debug builds, so the
/// test suite can run a real model in seconds; bounds checks stay on.
let optimized: [SwiftSetting] = [.unsafeFlags(["-O"])]

let package = Package(
    name: "Frugal",
    products: [
        .library(name: "Frugal", targets: ["FrugalCore", "FrugalCPU", "FrugalCUDA", "FrugalFormats", "FrugalModels", "FrugalTraining", "FrugalMeasure", "FrugalEval"]),
        .executable(name: "frugal", targets: ["frugal"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
    ],
    targets: [
        .target(name: "FrugalCore", swiftSettings: optimized, linkerSettings: [.linkedLibrary("dl")]),
        .target(name: "FrugalCPU", dependencies: ["FrugalCore"], swiftSettings: optimized),
        .target(name: "FrugalCUDA", dependencies: ["FrugalCore", "FrugalMeasure"], resources: [.copy("Kernels")],
                linkerSettings: [.linkedLibrary("dl")]),
        .target(name: "FrugalFormats", dependencies: ["FrugalCore"], swiftSettings: optimized),
        .target(name: "FrugalModels", dependencies: ["FrugalCore", "FrugalFormats"]),
        .target(name: "FrugalTraining", dependencies: ["FrugalCore", "FrugalCPU", "FrugalFormats", "FrugalModels"]),
        .target(name: "FrugalMeasure", dependencies: ["FrugalCore"]),
        .target(name: "FrugalEval", dependencies: ["FrugalCore", "FrugalFormats", "FrugalModels"]),
        .executableTarget(name: "frugal", dependencies: [
            "FrugalCore", "FrugalCPU", "FrugalCUDA", "FrugalFormats", "FrugalModels", "FrugalTraining", "FrugalMeasure", "FrugalEval",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Yams", package: "Yams"),
        ]),
        .testTarget(name: "FrugalCoreTests", dependencies: ["FrugalCore", "FrugalCPU"]),
        .testTarget(name: "FrugalFormatsTests", dependencies: ["FrugalCore", "FrugalFormats"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "FrugalTrainingTests", dependencies: ["FrugalCore", "FrugalCPU", "FrugalFormats", "FrugalModels", "FrugalTraining"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "FrugalCLITests", dependencies: ["frugal"]),
        .testTarget(name: "FrugalMeasureTests", dependencies: ["FrugalCore", "FrugalMeasure"]),
        .testTarget(name: "FrugalCUDATests", dependencies: ["FrugalCore", "FrugalCPU", "FrugalCUDA"]),
        .testTarget(name: "FrugalModelsTests", dependencies: ["FrugalCore", "FrugalCPU", "FrugalFormats", "FrugalModels", "FrugalEval"],
                    resources: [.copy("Fixtures")]),
    ]
)
