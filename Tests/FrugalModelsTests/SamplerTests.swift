// Sampling rules: greedy, top-k, top-p, repetition penalty, seeded determinism.
import XCTest
import FrugalEval

final class SamplerTests: XCTestCase {
    let logits: [Float] = [1.0, 3.0, 2.5, -1.0]

    func testGreedyPicksTheArgmax() {
        var sampler = Sampler(SamplingOptions())
        XCTAssertEqual(sampler.next(logits, history: []), 1)
    }

    func testTopKOneAndTinyTopPAreGreedy() {
        for options in [SamplingOptions(temperature: 1, topK: 1, seed: 3), SamplingOptions(temperature: 1, topP: 0.01, seed: 3)] {
            var sampler = Sampler(options)
            for _ in 0..<20 { XCTAssertEqual(sampler.next(logits, history: []), 1) }
        }
    }

    func testTopKKeepsOnlyTheBestTokens() {
        var sampler = Sampler(SamplingOptions(temperature: 5, topK: 2, seed: 9))
        let drawn = Set((0..<200).map { _ in sampler.next(logits, history: []) })
        XCTAssertEqual(drawn, [1, 2])
    }

    func testRepetitionPenaltyMovesAwayFromSeenTokens() {
        var sampler = Sampler(SamplingOptions(repetitionPenalty: 2))
        XCTAssertEqual(sampler.next(logits, history: [1]), 2)  // 3.0 / 2 = 1.5 < 2.5
    }

    func testSamplingIsDeterministicForASeed() {
        var a = Sampler(SamplingOptions(temperature: 1, seed: 42)), b = Sampler(SamplingOptions(temperature: 1, seed: 42))
        XCTAssertEqual((0..<50).map { _ in a.next(logits, history: []) }, (0..<50).map { _ in b.next(logits, history: []) })
        var counts = [Int32: Int]()
        for _ in 0..<2000 { counts[a.next(logits, history: []), default: 0] += 1 }
        XCTAssertGreaterThan(counts[1, default: 0], counts[2, default: 0])
        XCTAssertGreaterThan(counts[2, default: 0], counts[0, default: 0])
    }
}
