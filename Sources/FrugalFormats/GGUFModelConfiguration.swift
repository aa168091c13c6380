// The model configuration a GGUF file's metadata describes (llama.cpp's keys).
import FrugalCore

extension ModelConfiguration {
    /// Reads the decoder shape from llama.cpp's GGUF metadata keys (`<arch>.block_count`, …).
    ///
    /// Llama-shaped architectures are read: `llama` (also Mistral and SmolLM files) and `qwen2`.
    /// - Parameter hasOutputTensor: whether the file stores `output.weight` (else the head is tied).
    /// - Throws: `FrugalError.unsupportedArchitecture` naming what the file declares;
    ///   `FrugalError.malformedFile` naming a missing key.
    public static func fromGGUF(_ file: GGUFFile, hasOutputTensor: Bool) throws -> ModelConfiguration {
        guard let arch = file.architecture else {
            throw FrugalError.malformedFile(path: file.path, problem: "missing metadata key 'general.architecture'")
        }
        guard arch == "llama" || arch == "qwen2" else {
            throw FrugalError.unsupportedArchitecture(path: file.path, found: arch)
        }
        func int(_ key: String) throws -> Int {
            guard let v = file[arch + "." + key]?.int, v > 0 else {
                throw FrugalError.malformedFile(path: file.path, problem: "missing or invalid metadata key '\(arch).\(key)'")
            }
            return v
        }
        let hidden = try int("embedding_length"), heads = try int("attention.head_count")
        let kvHeads = file[arch + ".attention.head_count_kv"]?.int ?? heads
        guard hidden % heads == 0, kvHeads > 0, heads % kvHeads == 0 else {
            throw FrugalError.malformedFile(path: file.path, problem: "heads \(heads) / kv heads \(kvHeads) do not fit width \(hidden)")
        }
        let vocabulary = file[arch + ".vocab_size"]?.int ?? file["tokenizer.ggml.tokens"]?.array?.count ?? 0
        guard vocabulary > 0 else {
            throw FrugalError.malformedFile(path: file.path, problem: "no vocabulary size (neither '\(arch).vocab_size' nor 'tokenizer.ggml.tokens')")
        }
        let headDim = file[arch + ".attention.key_length"]?.int ?? hidden / heads
        var scaling: RopeScaling?
        if file[arch + ".rope.scaling.type"]?.string == "linear", let factor = file[arch + ".rope.scaling.factor"]?.double {
            scaling = .linear(factor: factor)
        }
        let eos = file["tokenizer.ggml.eos_token_id"]?.int
        return ModelConfiguration(
            architecture: .llama, modelType: arch, vocabSize: vocabulary, hiddenSize: hidden,
            intermediateSize: try int("feed_forward_length"), layers: try int("block_count"),
            heads: heads, kvHeads: kvHeads, headDim: headDim,
            maxPositions: file[arch + ".context_length"]?.int ?? 2048,
            normEps: file[arch + ".attention.layer_norm_rms_epsilon"]?.float ?? 1e-5,
            ropeTheta: file[arch + ".rope.freq_base"]?.double ?? 10_000, ropeScaling: scaling,
            tiedEmbeddings: !hasOutputTensor, attentionBias: arch == "qwen2",
            bosTokenID: file["tokenizer.ggml.bos_token_id"]?.int, eosTokenIDs: eos.map { [$0] } ?? [])
    }
}
