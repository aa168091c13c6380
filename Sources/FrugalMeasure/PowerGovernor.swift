// PowerGovernor: a software power budget that needs no privilege — after each step of work it
// pauses long enough that the energy used since the start stays within budget × elapsed time,
// learning the device's idle power from its own pauses.
import Foundation
import FrugalCore

/// Paces work so that average power, read from an `EnergyMeter`, stays under a budget.
///
/// After a step, the energy used so far E and the time so far T give the overdraft
/// E − budget·T; a pause of overdraft / (budget − idle power) pays it back, idle power being
/// what the meter read during earlier pauses (first guess: 15% of the budget). A budget below
/// the idle power cannot be met: the pauses are then capped at `maximumPause`.
public final class PowerGovernor {
    public let budgetWatts: Double
    public let meter: any EnergyMeter
    /// The longest single pause.
    public var maximumPause: Duration = .seconds(10)
    private let clock: () -> Double
    private let sleep: (Double) -> Void
    private let startJoules: Double
    private let startSeconds: Double
    private var idleWatts: Double
    private var pausedSeconds = 0.0

    /// Starts the budget now.
    /// - Parameters:
    ///   - clock: seconds on a monotonic clock (tests pass a fake one).
    ///   - sleep: pauses for that many seconds.
    /// - Returns: nil when the meter cannot be read.
    public init?(budgetWatts: Double, meter: any EnergyMeter, clock: @escaping () -> Double = PowerGovernor.monotonicSeconds,
                 sleep: @escaping (Double) -> Void = { Thread.sleep(forTimeInterval: $0) }) {
        guard budgetWatts > 0, let joules = meter.cumulativeJoules() else { return nil }
        self.budgetWatts = budgetWatts
        self.meter = meter
        self.clock = clock
        self.sleep = sleep
        startJoules = joules
        startSeconds = clock()
        idleWatts = 0.15 * budgetWatts
    }

    /// Pauses as long as the budget asks after a step; returns the pause, in seconds.
    @discardableResult
    public func pace() -> Double {
        guard let joules = meter.cumulativeJoules() else { return 0 }
        let overdraft = (joules - startJoules) - budgetWatts * (clock() - startSeconds)
        guard overdraft > 0 else { return 0 }
        let limit = maximumPause.inSeconds
        let pause = min(overdraft / max(budgetWatts - idleWatts, 0.05 * budgetWatts), limit)
        let before = meter.cumulativeJoules(), began = clock()
        sleep(pause)
        if let before, let after = meter.cumulativeJoules(), clock() > began {
            idleWatts = (after - before) / (clock() - began)
        }
        pausedSeconds += pause
        return pause
    }

    /// Average power since the start, watts.
    public var averageWatts: Double? {
        guard let joules = meter.cumulativeJoules() else { return nil }
        let seconds = clock() - startSeconds
        return seconds > 0 ? (joules - startJoules) / seconds : nil
    }

    /// The share of the elapsed time spent pausing (the throughput the budget costs).
    public var pausedFraction: Double {
        let seconds = clock() - startSeconds
        return seconds > 0 ? pausedSeconds / seconds : 0
    }

    /// Seconds on the system's monotonic clock.
    public static func monotonicSeconds() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9
    }
}
