// LearningRateSchedule: warm-up, then constant, linear or cosine decay.
import Foundation

/// The learning rate at each optimizer step.
public struct LearningRateSchedule: Sendable, Equatable {
    public var peak: Float
    public var kind: ScheduleKind
    public var warmupSteps: Int
    public var totalSteps: Int

    public init(peak: Float, kind: ScheduleKind, warmupSteps: Int, totalSteps: Int) {
        self.peak = peak; self.kind = kind; self.warmupSteps = warmupSteps; self.totalSteps = totalSteps
    }

    /// The rate for 0-based `step`: linear warm-up reaching `peak` at step `warmupSteps - 1`
    /// (the first step trains at `peak / warmupSteps`, not at 0 as transformers' schedulers
    /// do, so no step is wasted), then the decay to 0 at `totalSteps`.
    public func rate(at step: Int) -> Float {
        if step < warmupSteps { return peak * Float(step + 1) / Float(warmupSteps) }
        let decaySteps = max(1, totalSteps - warmupSteps)
        let progress = min(1, Float(step - warmupSteps) / Float(decaySteps))
        switch kind {
        case .constant: return peak
        case .linear: return peak * (1 - progress)
        case .cosine: return peak * 0.5 * (1 + Float(cos(Double.pi * Double(progress))))
        }
    }
}
