// Duration+Seconds: a duration as the Double seconds every timer and result reports.
extension Duration {
    /// The duration in seconds, as a `Double`: what every timer here reports.
    public var inSeconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}
