// NVMLEnergyMeter: a GPU's cumulative energy counter (nvmlDeviceGetTotalEnergyConsumption, mJ
// since the driver loaded) as an EnergyMeter — what a GPU run's joules come from.
import Foundation
import FrugalMeasure

/// The energy counter of one GPU, read through NVML.
public final class NVMLEnergyMeter: EnergyMeter, @unchecked Sendable {
    public let name: String
    private let nvml: NVML
    private let device: NVML.Device

    /// A meter on GPU `index`, or nil when NVML or its energy counter cannot be read (no driver,
    /// a GPU older than Volta).
    public init?(index: Int = 0, folders: [String] = DynamicLibrary.searchFolders()) {
        guard let nvml = try? NVML(folders: folders), let device = try? nvml.device(index),
              (try? nvml.totalEnergyConsumption(device)) != nil else { return nil }
        self.nvml = nvml
        self.device = device
        name = "NVML: " + ((try? nvml.name(device)) ?? "GPU \(index)")
    }

    public func cumulativeJoules() -> Double? {
        (try? nvml.totalEnergyConsumption(device)).map { Double($0) / 1000 }
    }
}
