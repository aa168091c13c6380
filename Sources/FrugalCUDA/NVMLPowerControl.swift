// NVMLPowerControl: a GPU's power limit through NVML, as the PowerLimitControl a PowerCap sets
// and restores. NVML's "no permission" becomes PowerCapError.notPermitted.
import Foundation
import FrugalMeasure

/// The power limit of one GPU.
public final class NVMLPowerControl: PowerLimitControl {
    public let deviceName: String
    private let nvml: NVML
    private let device: NVML.Device

    /// The control of GPU `index`; throws when NVML or the device cannot be opened.
    public init(index: Int = 0, folders: [String] = DynamicLibrary.searchFolders()) throws {
        nvml = try NVML(folders: folders)
        device = try nvml.device(index)
        deviceName = (try? nvml.name(device)) ?? "GPU \(index)"
    }

    public func powerLimit() throws -> Int { try nvml.powerLimit(device) }

    public func powerLimitRange() throws -> ClosedRange<Int> { try nvml.powerLimitRange(device) }

    public func setPowerLimit(milliwatts: Int) throws {
        do {
            try nvml.setPowerLimit(device, milliwatts: milliwatts)
        } catch let CUDAError.nvml(_, code, _) where code == NVML.noPermission {
            throw PowerCapError.notPermitted(device: deviceName)
        }
    }
}
