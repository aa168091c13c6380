// Fuzz target: SafeTensorsFile (header JSON and its checks), then every tensor read as floats.
// Any thrown error is a correct answer to bad input; a trap or sanitizer report is a bug.
import FrugalFormats

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let path = writeInput(data, size, name: "input.safetensors")
    guard let file = try? SafeTensorsFile(path: path) else { return 0 }
    for name in file.names {
        _ = try? file.info(name)
        _ = try? file.data(name)
        _ = try? file.floats(name)
    }
    return 0
}
