#!/usr/bin/env python3
"""Makes the NF4 fixture: bitsandbytes' 4-bit NormalFloat codes for data Frugal also quantizes.

Run with the oracle virtual environment (torch, numpy, and `pip install bitsandbytes`, whose
CPU build quantizes without a GPU):

    /work/oracle/bin/python scripts/make_nf4_fixture.py

It writes Tests/FrugalFormatsTests/Fixtures/nf4/bitsandbytes.json:
  version   the bitsandbytes version
  code      bitsandbytes' nf4 code book (quant_state.code), 16 float32 values
  values    4 blocks of 256 float32 values (normal, a different scale per block)
  absmax    bitsandbytes' absmax of each 64 values (blocksize=64, no double quantization)
  packed    bitsandbytes' packed codes, one byte per two values (first in the high nibble)
Each 64 values are scaled so that their absmax is s·d exactly, with d an f16 and s a byte (one
255 per block): then Frugal's double-quantized absmax equals bitsandbytes' float32 one, and the
two code assignments can be compared byte for byte (NF4Tests).
"""

import json
import os

import numpy as np
import torch
import bitsandbytes
import bitsandbytes.functional as F

rng = np.random.default_rng(7)
values = []
for block in range(4):
    d = np.float16(rng.uniform(0.001, 0.05))
    scales = rng.integers(120, 256, size=4)
    scales[rng.integers(0, 4)] = 255
    for s in scales:
        x = rng.standard_normal(64).astype(np.float32)
        top = np.float32(s) * np.float32(d)
        i = int(np.argmax(np.abs(x)))
        x = (x / np.abs(x[i]) * top).astype(np.float32)
        x[i] = np.copysign(top, x[i])
        values.append(x)
values = np.concatenate(values)

packed, state = F.quantize_4bit(torch.from_numpy(values), blocksize=64, quant_type="nf4",
                                compress_statistics=False)
out = {
    "version": bitsandbytes.__version__,
    "code": [float(v) for v in state.code.float().numpy()],
    "values": [float(v) for v in values],
    "absmax": [float(v) for v in state.absmax.float().numpy()],
    "packed": [int(b) for b in packed.flatten().numpy()],
}
here = os.path.dirname(os.path.abspath(__file__))
path = os.path.join(here, "..", "Tests", "FrugalFormatsTests", "Fixtures", "nf4", "bitsandbytes.json")
with open(path, "w") as f:
    json.dump(out, f, separators=(",", ":"))
print(f"wrote {path}: {len(values)} values, bitsandbytes {bitsandbytes.__version__}")
