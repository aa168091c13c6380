// swift-tools-version: 6.0
// Frugal: a native Swift engine that fine-tunes language models on one GPU or a CPU.
import PackageDescription

/// The hot loops (ops, dequantization, tokenization) are optimized even in debug builds, so the
/// test suite can run a real model in seconds; bounds checks stay on.
let optimized: [SwiftSetting] = [.unsafeFlags(["-O"])]

/// On x86-64 the modules with the CPU backend's loops (FrugalCore, FrugalCPU) compile for
/// x86-64-v3 (Haswell and later: AVX2, FMA, F16C), which halves the time of their elementwise
/// ops; `frugal` checks the CPU before it runs them. `FRUGAL_PORTABLE=1 swift build` compiles
/// them for any x86-64 instead.
#if arch(x86_64)
let vectorDefine: [SwiftSetting] = Context.environment["FRUGAL_PORTABLE"] == nil ? [.define("FRUGAL_X86_64_V3")] : []
#else
let vectorDefine: [SwiftSetting] = []
#endif
let vectorISA: [SwiftSetting] = vectorDefine.isEmpty ? [] : vectorDefine + [.unsafeFlags(["-target-cpu", "haswell"])]

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
        .target(name: "FrugalCore", swiftSettings: optimized + vectorISA, linkerSettings: [.linkedLibrary("dl")]),
        .target(name: "FrugalCPU", dependencies: ["FrugalCore"], swiftSettings: optimized + vectorISA),
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
        ], swiftSettings: vectorDefine),
        .testTarget(name: "FrugalCoreTests", dependencies: ["FrugalCore", "FrugalCPU"]),
        .testTarget(name: "FrugalFormatsTests", dependencies: ["FrugalCore", "FrugalFormats"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "FrugalTrainingTests", dependencies: ["FrugalCore", "FrugalCPU", "FrugalFormats", "FrugalModels", "FrugalTraining"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "FrugalCLITests", dependencies: ["frugal"], swiftSettings: vectorDefine),
        .testTarget(name: "FrugalMeasureTests", dependencies: ["FrugalCore", "FrugalMeasure"]),
        .testTarget(name: "FrugalCUDATests", dependencies: ["FrugalCore", "FrugalCPU", "FrugalCUDA"]),
        .testTarget(name: "FrugalModelsTests", dependencies: ["FrugalCore", "FrugalCPU", "FrugalFormats", "FrugalModels", "FrugalEval"],
                    resources: [.copy("Fixtures")]),
    ]
)
