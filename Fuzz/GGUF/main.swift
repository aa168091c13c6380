// Fuzz target: GGUFFile (header, metadata, tensor infos), then what Frugal reads from an opened
// file: the model configuration, the tokenizer, and each small tensor dequantized.
// Any thrown error is a correct answer to bad input; a trap or sanitizer report is a bug.
import FrugalCore
import FrugalFormats

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let path = writeInput(data, size, name: "input.gguf")
    guard let file = try? GGUFFile(path: path) else { return 0 }
    _ = file.architecture
    _ = try? ModelConfiguration.fromGGUF(file, hasOutputTensor: file.tensor("output.weight") != nil)
    if let tokenizer = try? Tokenizer(gguf: file) {
        _ = tokenizer.decode(tokenizer.encode("Hello, world! 123 <s>"))
    }
    for info in file.tensors where info.shape.count <= 1 << 16 {
        _ = try? file.tensorData(info.name)
        _ = try? file.dequantized(info.name)
    }
    return 0
}
