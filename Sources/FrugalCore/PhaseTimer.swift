// PhaseTimer: how long each phase of a training step ran on the device — forward, backward,
// optimizer — measured in the device's own order of work.
import Foundation

/// The phases of a training step that a `PhaseTimer` tells apart.
public enum StepPhase: String, Sendable, Codable, CaseIterable {
    /// PPO's experience: generating the rollouts and scoring them (reward, reference, critic).
    case rollout
    /// Forward and the loss.
    case forward
    /// Backward to every gradient (with checkpointing, the recomputed forwards too).
    case backward
    /// Gradient norm, clipping and the parameter update.
    case optimizer
}

/// Times the phases of one step as the device runs them: the GPU records events on its stream
/// (nothing waits until `finish`), the CPU reads the clock (its ops are synchronous).
///
/// `mark(phase)` gives the work queued since the previous mark (or `start`) to `phase`; a phase
/// marked several times in a step (once per micro-batch) adds up.
public protocol PhaseTimer: AnyObject {
    /// Starts a step: the clock's origin is the work queued so far.
    func start()
    /// The work queued since the previous mark, or since `start`, belongs to `phase`.
    func mark(_ phase: StepPhase)
    /// Seconds of each phase marked since `start`; waits for the device.
    func finish() -> [StepPhase: Double]
}

/// A `PhaseTimer` on the host clock, for backends whose ops finish before they return.
public final class HostPhaseTimer: PhaseTimer {
    private var last = ContinuousClock.now
    private var totals = [StepPhase: Double]()

    public init() {}

    public func start() {
        totals = [:]
        last = .now
    }

    public func mark(_ phase: StepPhase) {
        let now = ContinuousClock.now, d = now - last
        totals[phase, default: 0] += d.inSeconds
        last = now
    }

    public func finish() -> [StepPhase: Double] { totals }
}
