// DeviceFence: a point in a backend's queued work that the host can wait for.

/// Marks the work queued on a backend so far (`Backend.fence`): `wait()` returns once the device
/// has done all of it, while work queued later may still run. A backend that computes in place
/// (the CPU) has nothing to wait for.
public final class DeviceFence: @unchecked Sendable {
    private let waitForDevice: () -> Void
    private let release: () -> Void

    /// - Parameters:
    ///   - wait: blocks until the marked work is done.
    ///   - release: frees what marks it (a GPU event), once the fence is gone.
    public init(wait: @escaping () -> Void = {}, release: @escaping () -> Void = {}) {
        waitForDevice = wait
        self.release = release
    }

    deinit { release() }

    /// Blocks until the device has done the work queued before the fence.
    public func wait() { waitForDevice() }
}
