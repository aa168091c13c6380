// Fuzz target: Tokenizer(tokenizerJSON:) from tokenizer.json bytes, then a fixed short string
// encoded and decoded. The file sits alone in its folder, so no tokenizer_config.json is read.
// Any thrown error is a correct answer to bad input; a trap or sanitizer report is a bug.
import Foundation
import FrugalFormats

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let path = writeInput(data, size, name: "tokenizer.json")
    guard let tokenizer = try? Tokenizer(tokenizerJSON: URL(fileURLWithPath: path)) else { return 0 }
    let ids = tokenizer.encode("Hello, world! Ünïcødé 123 <s>\n\tend")
    _ = tokenizer.decode(ids)
    _ = tokenizer.decode(ids, skipSpecial: true)
    return 0
}
