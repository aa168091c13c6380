// TensorNaming: where each role's tensor is stored, per family and per file format.
import FrugalFormats

/// The stored names of a decoder's tensors, for one family in one file format.
///
/// Fused projections (Phi-3's `qkv_proj` and `gate_up_proj`, GPT-2's `c_attn`) name one stored
/// tensor that the loader splits by rows. GPT-2 stores `Conv1D` weights transposed (inputs, outputs).
struct TensorNaming {
    var tokenEmbedding: String
    var positionEmbedding: String?
    var projectIn: String?
    var projectOut: String?
    var finalNorm: String?
    var head: String?
    /// Block names, given the block index; each without its `.weight` / `.bias` suffix.
    var attentionNorm: (Int) -> String
    var query: (Int) -> String
    var key: (Int) -> String
    var value: (Int) -> String
    /// A fused q,k,v projection, when the family stores one.
    var fusedQKV: ((Int) -> String)?
    var output: (Int) -> String
    var mlpNorm: (Int) -> String
    var gate: ((Int) -> String)?
    var up: (Int) -> String
    /// A fused gate,up projection, when the family stores one.
    var fusedGateUp: ((Int) -> String)?
    var down: (Int) -> String
    /// Whether linear weights are stored (inputs, outputs) and must be transposed.
    var transposedLinears = false
    /// Whether q and k rows are in GGUF's interleaved rotary order and must be un-permuted.
    var interleavedRotary = false

    /// Hugging Face names for `family`.
    static func huggingFace(_ family: ModelConfiguration.Family) -> TensorNaming {
        switch family {
        case .llama, .gemma, .phi3:
            let p = { (i: Int) in "model.layers.\(i)." }
            var naming = TensorNaming(
                tokenEmbedding: "model.embed_tokens", finalNorm: "model.norm", head: "lm_head",
                attentionNorm: { p($0) + "input_layernorm" }, query: { p($0) + "self_attn.q_proj" },
                key: { p($0) + "self_attn.k_proj" }, value: { p($0) + "self_attn.v_proj" },
                output: { p($0) + "self_attn.o_proj" }, mlpNorm: { p($0) + "post_attention_layernorm" },
                gate: { p($0) + "mlp.gate_proj" }, up: { p($0) + "mlp.up_proj" }, down: { p($0) + "mlp.down_proj" })
            if family == .phi3 {
                naming.fusedQKV = { p($0) + "self_attn.qkv_proj" }
                naming.fusedGateUp = { p($0) + "mlp.gate_up_proj" }
            }
            return naming
        case .opt:
            let p = { (i: Int) in "model.decoder.layers.\(i)." }
            return TensorNaming(
                tokenEmbedding: "model.decoder.embed_tokens", positionEmbedding: "model.decoder.embed_positions",
                projectIn: "model.decoder.project_in", projectOut: "model.decoder.project_out",
                finalNorm: "model.decoder.final_layer_norm", head: "lm_head",
                attentionNorm: { p($0) + "self_attn_layer_norm" }, query: { p($0) + "self_attn.q_proj" },
                key: { p($0) + "self_attn.k_proj" }, value: { p($0) + "self_attn.v_proj" },
                output: { p($0) + "self_attn.out_proj" }, mlpNorm: { p($0) + "final_layer_norm" },
                gate: nil, up: { p($0) + "fc1" }, down: { p($0) + "fc2" })
        case .gpt2:
            let p = { (i: Int) in "transformer.h.\(i)." }
            return TensorNaming(
                tokenEmbedding: "transformer.wte", positionEmbedding: "transformer.wpe",
                finalNorm: "transformer.ln_f", head: "lm_head",
                attentionNorm: { p($0) + "ln_1" }, query: { p($0) + "attn.q" }, key: { p($0) + "attn.k" },
                value: { p($0) + "attn.v" }, fusedQKV: { p($0) + "attn.c_attn" }, output: { p($0) + "attn.c_proj" },
                mlpNorm: { p($0) + "ln_2" }, gate: nil, up: { p($0) + "mlp.c_fc" }, down: { p($0) + "mlp.c_proj" },
                transposedLinears: true)
        }
    }

    /// llama.cpp's GGUF names (llama-shaped families).
    static func gguf(interleavedRotary: Bool) -> TensorNaming {
        let p = { (i: Int) in "blk.\(i)." }
        return TensorNaming(
            tokenEmbedding: "token_embd", finalNorm: "output_norm", head: "output",
            attentionNorm: { p($0) + "attn_norm" }, query: { p($0) + "attn_q" }, key: { p($0) + "attn_k" },
            value: { p($0) + "attn_v" }, output: { p($0) + "attn_output" }, mlpNorm: { p($0) + "ffn_norm" },
            gate: { p($0) + "ffn_gate" }, up: { p($0) + "ffn_up" }, down: { p($0) + "ffn_down" },
            interleavedRotary: interleavedRotary)
    }
}
