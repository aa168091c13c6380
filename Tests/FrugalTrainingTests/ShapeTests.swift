// ShapeTests: the benchmark shapes (`--shape`) have their models' parameter counts, and a random
// OPT-350m (embeddings projected in and out) runs.
import FrugalCore
import FrugalCPU
import FrugalFormats
import FrugalModels
@testable import FrugalTraining
import XCTest

final class ShapeTests: XCTestCase {
    /// `model.num_parameters()` of each Hugging Face model.
    func testNamedShapesHaveTheirModelsParameterCounts() throws {
        let counts = ["smollm2": 134_515_008, "llama3.1-8b": 8_030_261_248, "llama2-7b": 6_738_415_616,
                      "opt-350m": 331_196_416, "phi3-mini": 3_821_079_552, "gemma-2b": 2_506_172_416]
        XCTAssertEqual(Set(counts.keys), Set(ModelConfiguration.shapeNames))
        for (name, count) in counts {
            let shape = try XCTUnwrap(ModelConfiguration.named(name), name)
            XCTAssertEqual(try MemoryPlan.predict(MemoryPlan.Configuration(model: shape, method: .full)).trainableCount, count, name)
        }
    }

    /// A random OPT-350m holds its 331M weights (the 512-wide embedding projected in and out)
    /// and gives logits over its vocabulary.
    func testRandomOPT350mRuns() {
        let shape = ModelConfiguration.opt350M, backend = CPUBackend()
        let decoder = Decoder.random(shape, on: backend, category: .trainable, seed: 1)
        XCTAssertEqual(decoder.weights.namedTensors.reduce(0) { $0 + $1.1.count }, 331_196_416)
        let logits = decoder.logits([2, 100, 200, 300])
        XCTAssertEqual(logits.shape, [4, shape.vocabSize])
        XCTAssertTrue(backend.download(logits).allSatisfy(\.isFinite))
    }
}
