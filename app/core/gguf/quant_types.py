"""Every file type llama.cpp's quantizer offers (tools/quantize/quantize.cpp ``QUANT_OPTIONS``), with
bits per weight, a one-line explanation and whether an importance matrix is needed.

Bits per weight: the figure llama.cpp gives (``"2.06 bpw"``), or, where it gives a file size for
Llama-3-8B (8.03 B weights, sizes in GiB), that size per weight, which includes the larger types its
mixes keep for embeddings and output. ``llama_ftype`` values are those of llama.h.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.core.errors import BadValueError
from app.core.gguf.header import GGUFHeader

LLAMA3_8B_WEIGHTS = 8.03e9
GiB = 1 << 30


@dataclass(frozen=True)
class QuantType:
    name: str
    ftype: int
    llama_desc: str  # llama.cpp's own description, verbatim
    explanation: str  # one line for a user
    imatrix: str = ""  # "required" (llama.cpp refuses without one), "recommended", or ""
    bpw_given: float | None = None  # when llama.cpp's description is not a Llama-3-8B size

    @property
    def bits_per_weight(self) -> float:
        if self.bpw_given is not None:
            return self.bpw_given
        size_gib = float(self.llama_desc.split("G,")[0])
        return size_gib * GiB * 8 / LLAMA3_8B_WEIGHTS

    def estimate_bytes(self, h: GGUFHeader) -> int:
        """The file size this type gives for the model of header ``h``: weights at this type's bits
        per weight plus the metadata (vocabulary, template) the source carries."""
        metadata = max(h.size_bytes - h.tensor_bytes, 0)
        return int(h.n_params * self.bits_per_weight / 8) + metadata

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "ftype": self.ftype, "bits_per_weight": round(self.bits_per_weight, 2),
                "explanation": self.explanation, "llama_cpp": self.llama_desc.strip(), "imatrix": self.imatrix}


Q = QuantType
QUANT_TYPES: tuple[QuantType, ...] = (
    Q("Q1_0", 40, " 1.125 bpw quantization", "1-bit blocks: experimental, for models trained for it", bpw_given=1.125),
    Q("Q2_0", 41, " 2.25 bpw quantization (group 64)", "2-bit blocks of 64: experimental, large quality loss", bpw_given=2.25),
    Q("Q4_0", 2, " 4.34G, +0.4685 ppl @ Llama-3-8B", "legacy 4-bit: fast everywhere, lower quality than Q4_K"),
    Q("Q4_1", 3, " 4.78G, +0.4511 ppl @ Llama-3-8B", "legacy 4-bit with offsets: bigger than Q4_K_M for less quality"),
    Q("MXFP4_MOE", 38, " MXFP4 MoE", "MXFP4 for mixture-of-experts weights (gpt-oss style models)", bpw_given=4.25),
    Q("Q5_0", 8, " 5.21G, +0.1316 ppl @ Llama-3-8B", "legacy 5-bit: prefer Q5_K_S"),
    Q("Q5_1", 9, " 5.65G, +0.1062 ppl @ Llama-3-8B", "legacy 5-bit with offsets: prefer Q5_K_M"),
    Q("IQ2_XXS", 19, " 2.06 bpw quantization", "2-bit i-quant: smallest usable, needs an importance matrix", "required", 2.06),
    Q("IQ2_XS", 20, " 2.31 bpw quantization", "2-bit i-quant: very small, needs an importance matrix", "required", 2.31),
    Q("IQ2_S", 28, " 2.5  bpw quantization", "2-bit i-quant: needs an importance matrix", "required", 2.5),
    Q("IQ2_M", 29, " 2.7  bpw quantization", "2-bit i-quant mix: best of the 2-bit types", "required", 2.7),
    Q("IQ1_S", 24, " 1.56 bpw quantization", "1-bit i-quant: only for very large models, big quality loss", "required", 1.56),
    Q("IQ1_M", 31, " 1.75 bpw quantization", "1-bit i-quant mix: only for very large models", "required", 1.75),
    Q("TQ1_0", 36, " 1.69 bpw ternarization", "ternary: only for models trained ternary (BitNet)", bpw_given=1.69),
    Q("TQ2_0", 37, " 2.06 bpw ternarization", "ternary, faster layout: only for ternary-trained models", bpw_given=2.06),
    Q("Q2_K", 10, " 2.96G, +3.5199 ppl @ Llama-3-8B", "2-bit k-quant: small, large quality loss", "recommended"),
    Q("Q2_K_S", 21, " 2.96G, +3.1836 ppl @ Llama-3-8B", "2-bit k-quant, smaller mix: needs an importance matrix", "required"),
    Q("IQ3_XXS", 23, " 3.06 bpw quantization", "3-bit i-quant: needs an importance matrix", "required", 3.06),
    Q("IQ3_S", 26, " 3.44 bpw quantization", "3-bit i-quant: better than Q3_K_S at the same size", "recommended", 3.44),
    Q("IQ3_M", 27, " 3.66 bpw quantization mix", "3-bit i-quant mix: better than Q3_K_M", "recommended", 3.66),
    Q("IQ3_XS", 22, " 3.3 bpw quantization", "3-bit i-quant: small", "recommended", 3.3),
    Q("Q3_K_S", 11, " 3.41G, +1.6321 ppl @ Llama-3-8B", "3-bit k-quant: noticeable quality loss"),
    Q("Q3_K_M", 12, " 3.74G, +0.6569 ppl @ Llama-3-8B", "3-bit k-quant mix: for tight memory"),
    Q("Q3_K_L", 13, " 4.03G, +0.5562 ppl @ Llama-3-8B", "3-bit k-quant, larger mix"),
    Q("IQ4_NL", 25, " 4.50 bpw non-linear quantization", "4-bit non-linear: good quality, any block layout", "recommended", 4.5),
    Q("IQ4_XS", 30, " 4.25 bpw non-linear quantization", "4-bit i-quant: near Q4_K_M quality, smaller", "recommended", 4.25),
    Q("Q4_K_S", 14, " 4.37G, +0.2689 ppl @ Llama-3-8B", "4-bit k-quant: a little smaller than Q4_K_M"),
    Q("Q4_K_M", 15, " 4.58G, +0.1754 ppl @ Llama-3-8B", "4-bit k-quant mix: the usual default, good balance"),
    Q("Q5_K_S", 16, " 5.21G, +0.1049 ppl @ Llama-3-8B", "5-bit k-quant: high quality"),
    Q("Q5_K_M", 17, " 5.33G, +0.0569 ppl @ Llama-3-8B", "5-bit k-quant mix: high quality, recommended when it fits"),
    Q("Q6_K", 18, " 6.14G, +0.0217 ppl @ Llama-3-8B", "6-bit k-quant: nearly lossless"),
    Q("Q8_0", 7, " 7.96G, +0.0026 ppl @ Llama-3-8B", "8-bit: practically lossless, half of F16"),
    Q("F16", 1, "14.00G, +0.0020 ppl @ Mistral-7B", "16-bit float: the unquantized baseline", bpw_given=16.0),
    Q("BF16", 32, "14.00G, -0.0050 ppl @ Mistral-7B", "bfloat16: the unquantized baseline, range of F32", bpw_given=16.0),
    Q("F32", 0, "26.00G              @ 7B", "32-bit float: twice F16, no quality gain for inference", bpw_given=32.0),
)
ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}
BY_NAME = {t.name: t for t in QUANT_TYPES}
# the types the wizard proposes, best quality first (the rest stay available by name)
LADDER = ("Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M", "Q4_K_S", "IQ4_XS", "Q3_K_M", "IQ3_M", "IQ3_XXS", "Q2_K", "IQ2_M", "IQ2_XS")
UNQUANTIZED = {0, 1, 32}  # F32, F16, BF16


def quant_type(name: str) -> QuantType:
    key = name.strip().upper()
    key = ALIASES.get(key, key)
    try:
        return BY_NAME[key]
    except KeyError:
        raise BadValueError(f"--type {name}: not a llama.cpp quantization type; use one of "
                            f"{', '.join(t.name for t in QUANT_TYPES)}") from None


def by_ftype(ftype: int | None) -> QuantType | None:
    return next((t for t in QUANT_TYPES if t.ftype == ftype), None)
