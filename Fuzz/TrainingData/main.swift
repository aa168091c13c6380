// Fuzz target: training data records — TrainingDataset (format detected, strict and skipping
// bad records) and PreferenceDataset, all reading the same JSON / JSON-lines bytes.
// Any thrown error is a correct answer to bad input; a trap or sanitizer report is a bug.
import FrugalTraining

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let path = writeInput(data, size, name: "data.jsonl")
    _ = try? TrainingDataset(contentsOf: path)
    _ = try? TrainingDataset(contentsOf: path, skipBadRecords: true)
    _ = try? PreferenceDataset(contentsOf: path)
    return 0
}
