// The software power budget on a simulated device: steps at 600 W, 80 W when paused. At 60% of
// the unconstrained power the average lands within 5% of the budget, and the throughput lost
// is what the energy balance says it must be.
import Foundation
import XCTest
@testable import FrugalMeasure

/// A device whose energy counter grows at `activeWatts` while working and `idleWatts` otherwise.
final class SimulatedDevice: EnergyMeter, @unchecked Sendable {
    let name = "simulated"
    let activeWatts: Double, idleWatts: Double
    private(set) var seconds = 0.0, joules = 0.0

    init(activeWatts: Double, idleWatts: Double) { self.activeWatts = activeWatts; self.idleWatts = idleWatts }

    func cumulativeJoules() -> Double? { joules }
    func work(_ s: Double) { seconds += s; joules += activeWatts * s }
    func idle(_ s: Double) { seconds += s; joules += idleWatts * s }
}

final class PowerGovernorTests: XCTestCase {
    func testAverageStaysWithinFivePercentOfTheBudget() throws {
        let device = SimulatedDevice(activeWatts: 600, idleWatts: 80)
        let budget = 0.6 * device.activeWatts
        let governor = try XCTUnwrap(PowerGovernor(budgetWatts: budget, meter: device, clock: { device.seconds },
                                                   sleep: { device.idle($0) }))
        for _ in 0..<200 {
            device.work(0.5)
            governor.pace()
        }
        let average = try XCTUnwrap(governor.averageWatts)
        XCTAssertEqual(average, budget, accuracy: 0.05 * budget, "average \(average) W for a budget of \(budget) W")
        XCTAssertLessThanOrEqual(average, budget * 1.01)
        // Energy balance: work w at 600 W and pause p at 80 W averaging 360 W → p / (w + p) = 240 / 520.
        XCTAssertEqual(governor.pausedFraction, 240.0 / 520.0, accuracy: 0.02)
    }

    func testUnderTheBudgetItNeverPauses() throws {
        let device = SimulatedDevice(activeWatts: 300, idleWatts: 80)
        let governor = try XCTUnwrap(PowerGovernor(budgetWatts: 400, meter: device, clock: { device.seconds },
                                                   sleep: { device.idle($0) }))
        for _ in 0..<50 {
            device.work(0.2)
            XCTAssertEqual(governor.pace(), 0)
        }
        XCTAssertEqual(governor.pausedFraction, 0)
    }

    func testAnUnreadableMeterGivesNoGovernor() {
        final class Unreadable: EnergyMeter, @unchecked Sendable {
            let name = "none"
            func cumulativeJoules() -> Double? { nil }
        }
        XCTAssertNil(PowerGovernor(budgetWatts: 300, meter: Unreadable()))
    }
}
