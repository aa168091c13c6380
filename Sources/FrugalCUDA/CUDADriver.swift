// CUDADriver: the CUDA driver API (libcuda) opened at run time, as typed C function pointers.
import Foundation

/// A device address (`CUdeviceptr`).
public typealias DevicePointer = UInt64

/// The functions of the CUDA driver API that Frugal calls, resolved from `libcuda.so.1`.
///
/// Each wrapper throws `CUDAError.driver` with the driver's own message when a call fails.
/// Handles (`CUcontext`, `CUmodule`, `CUfunction`, `CUstream`, `CUevent`) are opaque pointers.
public final class CUDADriver: @unchecked Sendable {
    public typealias Handle = UnsafeMutableRawPointer

    /// The library that opened, and where.
    public let library: DynamicLibrary

    // CUresult is an int enum; CUdevice an int; sizes size_t.
    private let cuInit: @convention(c) (UInt32) -> Int32
    private let cuDriverGetVersion: @convention(c) (UnsafeMutablePointer<Int32>) -> Int32
    private let cuDeviceGetCount: @convention(c) (UnsafeMutablePointer<Int32>) -> Int32
    private let cuDeviceGet: @convention(c) (UnsafeMutablePointer<Int32>, Int32) -> Int32
    private let cuDeviceGetName: @convention(c) (UnsafeMutablePointer<CChar>, Int32, Int32) -> Int32
    private let cuDeviceTotalMem: @convention(c) (UnsafeMutablePointer<Int>, Int32) -> Int32
    private let cuDeviceGetAttribute: @convention(c) (UnsafeMutablePointer<Int32>, Int32, Int32) -> Int32
    private let cuDevicePrimaryCtxRetain: @convention(c) (UnsafeMutablePointer<Handle?>, Int32) -> Int32
    private let cuDevicePrimaryCtxRelease: @convention(c) (Int32) -> Int32
    private let cuCtxSetCurrent: @convention(c) (Handle?) -> Int32
    private let cuCtxSynchronize: @convention(c) () -> Int32
    private let cuMemAlloc: @convention(c) (UnsafeMutablePointer<DevicePointer>, Int) -> Int32
    private let cuMemFree: @convention(c) (DevicePointer) -> Int32
    private let cuMemAllocHost: @convention(c) (UnsafeMutablePointer<UnsafeMutableRawPointer?>, Int) -> Int32
    private let cuMemFreeHost: @convention(c) (UnsafeMutableRawPointer?) -> Int32
    private let cuMemGetInfo: @convention(c) (UnsafeMutablePointer<Int>, UnsafeMutablePointer<Int>) -> Int32
    private let cuMemcpyHtoD: @convention(c) (DevicePointer, UnsafeRawPointer?, Int) -> Int32
    private let cuMemcpyDtoH: @convention(c) (UnsafeMutableRawPointer?, DevicePointer, Int) -> Int32
    private let cuMemcpyHtoDAsync: @convention(c) (DevicePointer, UnsafeRawPointer?, Int, Handle?) -> Int32
    private let cuMemcpyDtoHAsync: @convention(c) (UnsafeMutableRawPointer?, DevicePointer, Int, Handle?) -> Int32
    private let cuMemcpyDtoDAsync: @convention(c) (DevicePointer, DevicePointer, Int, Handle?) -> Int32
    private let cuMemsetD8Async: @convention(c) (DevicePointer, UInt8, Int, Handle?) -> Int32
    private let cuMemsetD32Async: @convention(c) (DevicePointer, UInt32, Int, Handle?) -> Int32
    private let cuModuleLoadData: @convention(c) (UnsafeMutablePointer<Handle?>, UnsafeRawPointer) -> Int32
    private let cuModuleUnload: @convention(c) (Handle?) -> Int32
    private let cuModuleGetFunction: @convention(c) (UnsafeMutablePointer<Handle?>, Handle?, UnsafePointer<CChar>) -> Int32
    private let cuFuncSetAttribute: @convention(c) (Handle?, Int32, Int32) -> Int32
    private let cuLaunchKernel: @convention(c) (Handle?, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, Handle?,
                                                UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                                                UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Int32
    private let cuStreamCreate: @convention(c) (UnsafeMutablePointer<Handle?>, UInt32) -> Int32
    private let cuStreamDestroy: @convention(c) (Handle?) -> Int32
    private let cuStreamSynchronize: @convention(c) (Handle?) -> Int32
    private let cuStreamWaitEvent: @convention(c) (Handle?, Handle?, UInt32) -> Int32
    private let cuEventCreate: @convention(c) (UnsafeMutablePointer<Handle?>, UInt32) -> Int32
    private let cuEventRecord: @convention(c) (Handle?, Handle?) -> Int32
    private let cuEventSynchronize: @convention(c) (Handle?) -> Int32
    private let cuEventQuery: @convention(c) (Handle?) -> Int32
    private let cuEventElapsedTime: @convention(c) (UnsafeMutablePointer<Float>, Handle?, Handle?) -> Int32
    private let cuEventDestroy: @convention(c) (Handle?) -> Int32
    private let cuGetErrorString: @convention(c) (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>) -> Int32

    /// Device attributes (`CUdevice_attribute`) Frugal reads.
    public enum Attribute: Int32 {
        case multiprocessorCount = 16
        case computeCapabilityMajor = 75
        case computeCapabilityMinor = 76
        case maxSharedMemoryPerBlockOptin = 97
    }

    /// `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`.
    static let maxDynamicSharedSizeAttribute: Int32 = 8
    /// `CUDA_ERROR_OUT_OF_MEMORY`.
    public static let outOfMemoryCode: Int32 = 2

    /// Opens the driver library (`libcuda.so.1`) and resolves its functions; does not call `cuInit`.
    /// - Throws: `CUDAError.libraryNotFound` ("no NVIDIA driver: …") or `.missingSymbol`.
    public init(folders: [String] = DynamicLibrary.searchFolders()) throws {
        library = try openLibrary(["libcuda.so.1", "libcuda.so"], purpose: "no NVIDIA driver", folders: folders)
        let s = SymbolTable(library: library)
        cuInit = try s("cuInit")
        cuDriverGetVersion = try s("cuDriverGetVersion")
        cuDeviceGetCount = try s("cuDeviceGetCount")
        cuDeviceGet = try s("cuDeviceGet")
        cuDeviceGetName = try s("cuDeviceGetName")
        cuDeviceTotalMem = try s("cuDeviceTotalMem_v2")
        cuDeviceGetAttribute = try s("cuDeviceGetAttribute")
        cuDevicePrimaryCtxRetain = try s("cuDevicePrimaryCtxRetain")
        cuDevicePrimaryCtxRelease = try s.optional("cuDevicePrimaryCtxRelease_v2") ?? s("cuDevicePrimaryCtxRelease")
        cuCtxSetCurrent = try s("cuCtxSetCurrent")
        cuCtxSynchronize = try s("cuCtxSynchronize")
        cuMemAlloc = try s("cuMemAlloc_v2")
        cuMemFree = try s("cuMemFree_v2")
        cuMemAllocHost = try s("cuMemAllocHost_v2")
        cuMemFreeHost = try s("cuMemFreeHost")
        cuMemGetInfo = try s("cuMemGetInfo_v2")
        cuMemcpyHtoD = try s("cuMemcpyHtoD_v2")
        cuMemcpyDtoH = try s("cuMemcpyDtoH_v2")
        cuMemcpyHtoDAsync = try s("cuMemcpyHtoDAsync_v2")
        cuMemcpyDtoHAsync = try s("cuMemcpyDtoHAsync_v2")
        cuMemcpyDtoDAsync = try s("cuMemcpyDtoDAsync_v2")
        cuMemsetD8Async = try s("cuMemsetD8Async")
        cuMemsetD32Async = try s("cuMemsetD32Async")
        cuModuleLoadData = try s("cuModuleLoadData")
        cuModuleUnload = try s("cuModuleUnload")
        cuModuleGetFunction = try s("cuModuleGetFunction")
        cuFuncSetAttribute = try s("cuFuncSetAttribute")
        cuLaunchKernel = try s("cuLaunchKernel")
        cuStreamCreate = try s("cuStreamCreate")
        cuStreamDestroy = try s("cuStreamDestroy_v2")
        cuStreamSynchronize = try s("cuStreamSynchronize")
        cuStreamWaitEvent = try s("cuStreamWaitEvent")
        cuEventCreate = try s("cuEventCreate")
        cuEventRecord = try s("cuEventRecord")
        cuEventSynchronize = try s("cuEventSynchronize")
        cuEventQuery = try s("cuEventQuery")
        cuEventElapsedTime = try s.optional("cuEventElapsedTime_v2") ?? s("cuEventElapsedTime")
        cuEventDestroy = try s("cuEventDestroy_v2")
        cuGetErrorString = try s("cuGetErrorString")
    }

    /// The driver's message for a `CUresult`.
    public func errorString(_ code: Int32) -> String {
        var message: UnsafePointer<CChar>?
        guard cuGetErrorString(code, &message) == 0, let message else { return "unknown error" }
        return String(cString: message)
    }

    /// Throws `CUDAError.driver` unless `code` is `CUDA_SUCCESS`.
    @inline(__always) func check(_ code: Int32, _ call: @autoclosure () -> String) throws {
        if code != 0 { throw CUDAError.driver(call: call(), code: code, message: errorString(code)) }
    }

    // MARK: - Initialization and devices

    /// `cuInit(0)`.
    public func initialize() throws { try check(cuInit(0), "cuInit") }

    /// The driver's CUDA version as (major, minor), e.g. (13, 0).
    public func version() throws -> (major: Int, minor: Int) {
        var v: Int32 = 0
        try check(cuDriverGetVersion(&v), "cuDriverGetVersion")
        return (Int(v) / 1000, Int(v) % 1000 / 10)
    }

    /// Number of CUDA devices.
    public func deviceCount() throws -> Int {
        var n: Int32 = 0
        try check(cuDeviceGetCount(&n), "cuDeviceGetCount")
        return Int(n)
    }

    /// The device handle of ordinal `index`.
    public func device(_ index: Int) throws -> Int32 {
        var d: Int32 = 0
        try check(cuDeviceGet(&d, Int32(index)), "cuDeviceGet(\(index))")
        return d
    }

    /// The device's marketing name.
    public func name(_ device: Int32) throws -> String {
        var code: Int32 = 0
        let name = cString(capacity: 256) { code = cuDeviceGetName($0, $1, device) }
        try check(code, "cuDeviceGetName")
        return name
    }

    /// The device's memory in bytes.
    public func totalMemory(_ device: Int32) throws -> Int {
        var bytes = 0
        try check(cuDeviceTotalMem(&bytes, device), "cuDeviceTotalMem")
        return bytes
    }

    /// A device attribute.
    public func attribute(_ attribute: Attribute, _ device: Int32) throws -> Int {
        var value: Int32 = 0
        try check(cuDeviceGetAttribute(&value, attribute.rawValue, device), "cuDeviceGetAttribute(\(attribute))")
        return Int(value)
    }

    /// The compute capability, e.g. (9, 0) for an H100.
    public func computeCapability(_ device: Int32) throws -> (major: Int, minor: Int) {
        (try attribute(.computeCapabilityMajor, device), try attribute(.computeCapabilityMinor, device))
    }

    // MARK: - Context

    /// Retains the device's primary context and makes it current on this thread.
    public func retainPrimaryContext(_ device: Int32) throws -> Handle {
        var context: Handle?
        try check(cuDevicePrimaryCtxRetain(&context, device), "cuDevicePrimaryCtxRetain")
        try check(cuCtxSetCurrent(context), "cuCtxSetCurrent")
        return context!
    }

    /// Releases the primary context retained by `retainPrimaryContext`.
    public func releasePrimaryContext(_ device: Int32) { _ = cuDevicePrimaryCtxRelease(device) }

    /// Makes `context` current on the calling thread (each thread that calls the driver needs it).
    public func setCurrent(_ context: Handle) throws { try check(cuCtxSetCurrent(context), "cuCtxSetCurrent") }

    /// Waits for all work of the current context.
    public func synchronize() throws { try check(cuCtxSynchronize(), "cuCtxSynchronize") }

    // MARK: - Memory

    /// `cuMemAlloc`: `bytes` of device memory. Returns the raw result so callers can react to
    /// out-of-memory (`outOfMemoryCode`).
    public func allocate(_ bytes: Int) -> (pointer: DevicePointer, code: Int32) {
        var pointer: DevicePointer = 0
        let code = cuMemAlloc(&pointer, bytes)
        return (pointer, code)
    }

    /// `cuMemFree`.
    public func free(_ pointer: DevicePointer) throws { try check(cuMemFree(pointer), "cuMemFree") }

    /// Page-locked host memory (for asynchronous copies).
    public func allocateHost(_ bytes: Int) throws -> UnsafeMutableRawPointer {
        var pointer: UnsafeMutableRawPointer?
        try check(cuMemAllocHost(&pointer, bytes), "cuMemAllocHost(\(bytes))")
        return pointer!
    }

    /// Frees memory from `allocateHost`.
    public func freeHost(_ pointer: UnsafeMutableRawPointer) { _ = cuMemFreeHost(pointer) }

    /// Free and total device memory of the current context's device, in bytes.
    public func memoryInfo() throws -> (free: Int, total: Int) {
        var free = 0, total = 0
        try check(cuMemGetInfo(&free, &total), "cuMemGetInfo")
        return (free, total)
    }

    /// Synchronous copy host → device.
    public func copy(to device: DevicePointer, from host: UnsafeRawPointer, bytes: Int) throws {
        try check(cuMemcpyHtoD(device, host, bytes), "cuMemcpyHtoD(\(bytes) bytes)")
    }

    /// Synchronous copy device → host.
    public func copy(to host: UnsafeMutableRawPointer, from device: DevicePointer, bytes: Int) throws {
        try check(cuMemcpyDtoH(host, device, bytes), "cuMemcpyDtoH(\(bytes) bytes)")
    }

    /// Copy host → device ordered on `stream` (the host buffer must stay valid until it runs
    /// unless it is pageable memory, which the driver stages before returning).
    public func copyAsync(to device: DevicePointer, from host: UnsafeRawPointer, bytes: Int, stream: Handle?) throws {
        try check(cuMemcpyHtoDAsync(device, host, bytes, stream), "cuMemcpyHtoDAsync(\(bytes) bytes)")
    }

    /// Copy device → host ordered on `stream`.
    public func copyAsync(to host: UnsafeMutableRawPointer, from device: DevicePointer, bytes: Int, stream: Handle?) throws {
        try check(cuMemcpyDtoHAsync(host, device, bytes, stream), "cuMemcpyDtoHAsync(\(bytes) bytes)")
    }

    /// Copy device → device ordered on `stream`.
    public func copyAsync(to destination: DevicePointer, from source: DevicePointer, bytes: Int, stream: Handle?) throws {
        try check(cuMemcpyDtoDAsync(destination, source, bytes, stream), "cuMemcpyDtoDAsync(\(bytes) bytes)")
    }

    /// Sets `bytes` bytes to `value` on `stream`.
    public func memsetAsync(_ pointer: DevicePointer, _ value: UInt8, bytes: Int, stream: Handle?) throws {
        try check(cuMemsetD8Async(pointer, value, bytes, stream), "cuMemsetD8Async(\(bytes) bytes)")
    }

    /// Sets `count` 32-bit words to `value` on `stream`.
    public func memsetAsync(_ pointer: DevicePointer, words value: UInt32, count: Int, stream: Handle?) throws {
        try check(cuMemsetD32Async(pointer, value, count, stream), "cuMemsetD32Async(\(count) words)")
    }

    // MARK: - Modules and launches

    /// Loads a module from a CUBIN or PTX image.
    public func loadModule(_ image: [UInt8]) throws -> Handle {
        var module: Handle?
        let code = image.withUnsafeBytes { cuModuleLoadData(&module, $0.baseAddress!) }
        try check(code, "cuModuleLoadData")
        return module!
    }

    /// Unloads a module.
    public func unloadModule(_ module: Handle) { _ = cuModuleUnload(module) }

    /// The kernel `name` (an `extern "C"` symbol) of `module`.
    public func function(_ module: Handle, _ name: String) throws -> Handle {
        var function: Handle?
        try check(cuModuleGetFunction(&function, module, name), "cuModuleGetFunction(\(name))")
        return function!
    }

    /// Allows `function` to use up to `bytes` of dynamic shared memory (above the 48 KiB default).
    public func setMaxDynamicSharedMemory(_ function: Handle, bytes: Int) throws {
        try check(cuFuncSetAttribute(function, Self.maxDynamicSharedSizeAttribute, Int32(bytes)),
                  "cuFuncSetAttribute(max dynamic shared memory \(bytes))")
    }

    /// Launches `function` on `stream`; `parameters` points at one pointer per kernel argument.
    public func launch(_ function: Handle, grid: (UInt32, UInt32, UInt32), block: (UInt32, UInt32, UInt32),
                       sharedMemory: Int, stream: Handle?,
                       parameters: UnsafeMutablePointer<UnsafeMutableRawPointer?>?) throws {
        try check(cuLaunchKernel(function, grid.0, grid.1, grid.2, block.0, block.1, block.2, UInt32(sharedMemory), stream,
                                 parameters, nil), "cuLaunchKernel")
    }

    // MARK: - Streams and events

    /// A new stream (`CU_STREAM_NON_BLOCKING` when `nonBlocking`).
    public func createStream(nonBlocking: Bool = false) throws -> Handle {
        var stream: Handle?
        try check(cuStreamCreate(&stream, nonBlocking ? 1 : 0), "cuStreamCreate")
        return stream!
    }

    /// Destroys a stream.
    public func destroyStream(_ stream: Handle) { _ = cuStreamDestroy(stream) }

    /// Waits until all work on `stream` is done.
    public func synchronize(_ stream: Handle?) throws { try check(cuStreamSynchronize(stream), "cuStreamSynchronize") }

    /// A new event (`CU_EVENT_DISABLE_TIMING` unless `timing`).
    public func createEvent(timing: Bool = false) throws -> Handle {
        var event: Handle?
        try check(cuEventCreate(&event, timing ? 0 : 2), "cuEventCreate")
        return event!
    }

    /// Records `event` on `stream`.
    public func record(_ event: Handle, on stream: Handle?) throws { try check(cuEventRecord(event, stream), "cuEventRecord") }

    /// Waits for `event`.
    public func synchronize(event: Handle) throws { try check(cuEventSynchronize(event), "cuEventSynchronize") }

    /// Makes work queued on `stream` after this call wait until `event` has passed (the host does not wait).
    public func wait(_ stream: Handle?, for event: Handle) throws {
        try check(cuStreamWaitEvent(stream, event, 0), "cuStreamWaitEvent")
    }

    /// Whether the work before `event` is done, without waiting (`CUDA_ERROR_NOT_READY`: not yet).
    public func isDone(_ event: Handle) throws -> Bool {
        let code = cuEventQuery(event)
        if code == 600 { return false }
        try check(code, "cuEventQuery")
        return true
    }

    /// Milliseconds between two recorded timing events.
    public func elapsed(from start: Handle, to end: Handle) throws -> Float {
        var ms: Float = 0
        try check(cuEventElapsedTime(&ms, start, end), "cuEventElapsedTime")
        return ms
    }

    /// Destroys an event.
    public func destroyEvent(_ event: Handle) { _ = cuEventDestroy(event) }
}
