// swift-tools-version: 6.0
// Frugal: a native Swift engine that fine-tunes language models on one GPU or a CPU.
import PackageDescription

let package = Package(
    name: "Frugal",
    products: [
        .library(name: "Frugal", targets: ["FrugalCore", "FrugalCPU", "FrugalFormats", "FrugalModels", "FrugalTraining", "FrugalEval"]),
        .executable(name: "frugal", targets: ["frugal"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .target(name: "FrugalCore", linkerSettings: [.linkedLibrary("dl")]),
        .target(name: "FrugalCPU", dependencies: ["FrugalCore"]),
        .target(name: "FrugalFormats", dependencies: ["FrugalCore"]),
        .target(name: "FrugalModels", dependencies: ["FrugalCore", "FrugalFormats"]),
        .target(name: "FrugalTraining", dependencies: ["FrugalCore", "FrugalFormats", "FrugalModels"]),
        .target(name: "FrugalEval", dependencies: ["FrugalCore", "FrugalFormats", "FrugalModels"]),
        .executableTarget(name: "frugal", dependencies: [
            "FrugalCore", "FrugalCPU", "FrugalFormats", "FrugalModels", "FrugalTraining", "FrugalEval",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "FrugalCoreTests", dependencies: ["FrugalCore", "FrugalCPU"]),
        .testTarget(name: "FrugalFormatsTests", dependencies: ["FrugalCore", "FrugalFormats"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "FrugalTrainingTests", dependencies: ["FrugalCore", "FrugalCPU", "FrugalFormats", "FrugalModels", "FrugalTraining"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "FrugalModelsTests", dependencies: ["FrugalCore", "FrugalCPU", "FrugalFormats", "FrugalModels", "FrugalEval"],
                    resources: [.copy("Fixtures")]),
    ]
)
