// CUDAPhaseTimer: a step's phases timed by events on the backend's stream, read once at the end.
import FrugalCore

/// Records a timing event on the stream at `start` and at every mark, so timing adds no wait to
/// the step; `finish` waits for the last event and sums the intervals per phase. Events are
/// created once and reused from step to step.
final class CUDAPhaseTimer: PhaseTimer {
    private let backend: CUDABackend
    private var events = [CUDADriver.Handle]()
    /// The phase of each recorded interval: event i ends interval i − 1.
    private var phases = [StepPhase]()

    init(backend: CUDABackend) { self.backend = backend }

    deinit { for event in events { backend.driver.destroyEvent(event) } }

    func start() {
        phases = []
        record(0)
    }

    func mark(_ phase: StepPhase) {
        phases.append(phase)
        record(phases.count)
    }

    func finish() -> [StepPhase: Double] {
        guard !phases.isEmpty else { return [:] }
        return backend.must("phase timer") {
            try backend.driver.synchronize(event: events[phases.count])
            var totals = [StepPhase: Double]()
            for (i, phase) in phases.enumerated() {
                totals[phase, default: 0] += Double(try backend.driver.elapsed(from: events[i], to: events[i + 1])) / 1000
            }
            return totals
        }
    }

    /// Records event `index` (created on first use) on the backend's stream.
    private func record(_ index: Int) {
        backend.must("phase timer") {
            if index == events.count { events.append(try backend.driver.createEvent(timing: true)) }
            try backend.driver.record(events[index], on: backend.stream)
        }
    }
}
