// NVML: NVIDIA's management library (libnvidia-ml) opened at run time — device names, power and
// energy counters, and the power limit.
import Foundation

/// The NVML functions Frugal calls. Setting the power limit happens only through
/// `setPowerLimit`, never implicitly.
public final class NVML: @unchecked Sendable {
    public typealias Device = UnsafeMutableRawPointer

    /// The library that opened, and where.
    public let library: DynamicLibrary

    private let nvmlInit: @convention(c) () -> Int32
    private let nvmlShutdown: @convention(c) () -> Int32
    private let nvmlErrorString: @convention(c) (Int32) -> UnsafePointer<CChar>?
    private let nvmlSystemGetDriverVersion: @convention(c) (UnsafeMutablePointer<CChar>, UInt32) -> Int32
    private let nvmlDeviceGetCount: @convention(c) (UnsafeMutablePointer<UInt32>) -> Int32
    private let nvmlDeviceGetHandleByIndex: @convention(c) (UInt32, UnsafeMutablePointer<Device?>) -> Int32
    private let nvmlDeviceGetName: @convention(c) (Device?, UnsafeMutablePointer<CChar>, UInt32) -> Int32
    private let nvmlDeviceGetPowerUsage: @convention(c) (Device?, UnsafeMutablePointer<UInt32>) -> Int32
    private let nvmlDeviceGetTotalEnergyConsumption: @convention(c) (Device?, UnsafeMutablePointer<UInt64>) -> Int32
    private let nvmlDeviceGetPowerManagementLimit: @convention(c) (Device?, UnsafeMutablePointer<UInt32>) -> Int32
    private let nvmlDeviceGetPowerManagementLimitConstraints: @convention(c) (Device?, UnsafeMutablePointer<UInt32>,
                                                                               UnsafeMutablePointer<UInt32>) -> Int32
    private let nvmlDeviceSetPowerManagementLimit: @convention(c) (Device?, UInt32) -> Int32
    /// Writes `nvmlMemory_t`: total, free and used bytes, three `unsigned long long`.
    private let nvmlDeviceGetMemoryInfo: @convention(c) (Device?, UnsafeMutablePointer<UInt64>) -> Int32

    /// `NVML_ERROR_NO_PERMISSION`.
    public static let noPermission: Int32 = 4
    /// `NVML_ERROR_NOT_SUPPORTED`.
    public static let notSupported: Int32 = 3

    /// Opens `libnvidia-ml.so.1`, resolves its functions and calls `nvmlInit`.
    /// - Throws: `CUDAError.libraryNotFound`, `.missingSymbol` or `.nvml` (init failed: no driver loaded).
    public init(folders: [String] = DynamicLibrary.searchFolders()) throws {
        library = try openLibrary(["libnvidia-ml.so.1", "libnvidia-ml.so"], purpose: "no NVML (NVIDIA's management library)",
                                  folders: folders)
        let s = SymbolTable(library: library)
        nvmlInit = try s.optional("nvmlInit_v2") ?? s("nvmlInit")
        nvmlShutdown = try s("nvmlShutdown")
        nvmlErrorString = try s("nvmlErrorString")
        nvmlSystemGetDriverVersion = try s("nvmlSystemGetDriverVersion")
        nvmlDeviceGetCount = try s.optional("nvmlDeviceGetCount_v2") ?? s("nvmlDeviceGetCount")
        nvmlDeviceGetHandleByIndex = try s.optional("nvmlDeviceGetHandleByIndex_v2") ?? s("nvmlDeviceGetHandleByIndex")
        nvmlDeviceGetName = try s("nvmlDeviceGetName")
        nvmlDeviceGetPowerUsage = try s("nvmlDeviceGetPowerUsage")
        nvmlDeviceGetTotalEnergyConsumption = try s("nvmlDeviceGetTotalEnergyConsumption")
        nvmlDeviceGetPowerManagementLimit = try s("nvmlDeviceGetPowerManagementLimit")
        nvmlDeviceGetPowerManagementLimitConstraints = try s("nvmlDeviceGetPowerManagementLimitConstraints")
        nvmlDeviceSetPowerManagementLimit = try s("nvmlDeviceSetPowerManagementLimit")
        nvmlDeviceGetMemoryInfo = try s("nvmlDeviceGetMemoryInfo")
        try check(nvmlInit(), "nvmlInit")
    }

    deinit { _ = nvmlShutdown() }

    /// NVML's message for a return code.
    public func errorString(_ code: Int32) -> String { nvmlErrorString(code).map { String(cString: $0) } ?? "unknown error" }

    private func check(_ code: Int32, _ call: String) throws {
        if code != 0 { throw CUDAError.nvml(call: call, code: code, message: errorString(code)) }
    }

    /// The kernel driver's version, e.g. "580.65.06".
    public func driverVersion() throws -> String {
        var code: Int32 = 0
        let text = cString(capacity: 96) { code = nvmlSystemGetDriverVersion($0, UInt32($1)) }
        try check(code, "nvmlSystemGetDriverVersion")
        return text
    }

    /// Number of GPUs NVML sees.
    public func deviceCount() throws -> Int {
        var n: UInt32 = 0
        try check(nvmlDeviceGetCount(&n), "nvmlDeviceGetCount")
        return Int(n)
    }

    /// The handle of GPU `index` (NVML's order, which is PCI order as `CUDA_DEVICE_ORDER=PCI_BUS_ID`).
    public func device(_ index: Int) throws -> Device {
        var device: Device?
        try check(nvmlDeviceGetHandleByIndex(UInt32(index), &device), "nvmlDeviceGetHandleByIndex(\(index))")
        return device!
    }

    /// The GPU's name.
    public func name(_ device: Device) throws -> String {
        var code: Int32 = 0
        let text = cString(capacity: 96) { code = nvmlDeviceGetName(device, $0, UInt32($1)) }
        try check(code, "nvmlDeviceGetName")
        return text
    }

    /// The board's power draw now, in milliwatts.
    public func powerUsage(_ device: Device) throws -> Int {
        var milliwatts: UInt32 = 0
        try check(nvmlDeviceGetPowerUsage(device, &milliwatts), "nvmlDeviceGetPowerUsage")
        return Int(milliwatts)
    }

    /// Energy used since the driver loaded, in millijoules (Volta and newer).
    public func totalEnergyConsumption(_ device: Device) throws -> UInt64 {
        var millijoules: UInt64 = 0
        try check(nvmlDeviceGetTotalEnergyConsumption(device, &millijoules), "nvmlDeviceGetTotalEnergyConsumption")
        return millijoules
    }

    /// The device memory in use by every process, in bytes.
    public func memoryUsed(_ device: Device) throws -> Int {
        var memory = [UInt64](repeating: 0, count: 3)
        try check(nvmlDeviceGetMemoryInfo(device, &memory), "nvmlDeviceGetMemoryInfo")
        return Int(memory[2])
    }

    /// The power limit in force, in milliwatts.
    public func powerLimit(_ device: Device) throws -> Int {
        var milliwatts: UInt32 = 0
        try check(nvmlDeviceGetPowerManagementLimit(device, &milliwatts), "nvmlDeviceGetPowerManagementLimit")
        return Int(milliwatts)
    }

    /// The range the power limit may be set in, in milliwatts.
    public func powerLimitRange(_ device: Device) throws -> ClosedRange<Int> {
        var low: UInt32 = 0, high: UInt32 = 0
        try check(nvmlDeviceGetPowerManagementLimitConstraints(device, &low, &high), "nvmlDeviceGetPowerManagementLimitConstraints")
        return Int(low)...Int(high)
    }

    /// Sets the power limit (needs root; a `CUDAError.nvml` with code `noPermission` otherwise).
    /// Changes the GPU's settings: call it only when the user asked for a hardware power cap,
    /// and restore the previous limit on exit.
    public func setPowerLimit(_ device: Device, milliwatts: Int) throws {
        try check(nvmlDeviceSetPowerManagementLimit(device, UInt32(milliwatts)), "nvmlDeviceSetPowerManagementLimit(\(milliwatts) mW)")
    }
}
