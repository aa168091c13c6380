// LossScaler: dynamic loss scaling for fp16 training.

/// Keeps fp16 gradients in range: the loss is multiplied by `scale` before backward; a step
/// whose gradients overflow is skipped and the scale halves; after `growthInterval` clean steps
/// it doubles (PyTorch's `GradScaler` rule).
public struct LossScaler: Sendable, Codable, Equatable {
    /// The scaler's settings.
    public struct Settings: Sendable, Codable, Equatable {
        public var initialScale: Float = 65536
        public var growthFactor: Float = 2
        public var backoffFactor: Float = 0.5
        public var growthInterval = 2000
        /// Stop the run after this many skipped steps in a row.
        public var maxConsecutiveSkips = 20

        public init() {}
    }

    public let settings: Settings
    public private(set) var scale: Float
    /// Clean steps since the last change of scale.
    public private(set) var cleanSteps = 0
    /// Skipped steps in a row.
    public private(set) var consecutiveSkips = 0
    /// Skipped steps in all.
    public private(set) var skippedSteps = 0

    public init(_ settings: Settings) {
        self.settings = settings
        scale = settings.initialScale
    }

    /// Records a step's outcome; returns whether its update should be applied.
    public mutating func update(gradientsFinite: Bool) -> Bool {
        if !gradientsFinite {
            scale *= settings.backoffFactor
            cleanSteps = 0
            consecutiveSkips += 1
            skippedSteps += 1
            return false
        }
        consecutiveSkips = 0
        cleanSteps += 1
        if cleanSteps >= settings.growthInterval {
            scale *= settings.growthFactor
            cleanSteps = 0
        }
        return true
    }
}
