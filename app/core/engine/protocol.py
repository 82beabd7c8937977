"""What the engine host and its client say to each other: one JSON object per line.

Parent -> host ops: ``load``, ``unload``, ``chat``, ``cancel``, ``count``, ``shutdown``.
Host -> parent events: ``ready``, ``loaded``, ``start``, ``token``, ``done``, ``counted``, ``error``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import IO, Any


def send(stream: IO[str], message: dict[str, Any]) -> None:
    stream.write(json.dumps(message, ensure_ascii=False) + "\n")
    stream.flush()


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    max_tokens: int | None = 1024  # None: until the model stops or the context is full
    seed: int = -1  # -1: a new random seed per reply
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SamplingParams":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


PRESETS: dict[str, SamplingParams] = {
    "Balanced": SamplingParams(),
    "Precise": SamplingParams(temperature=0.2, top_p=0.9, top_k=20, min_p=0.05, repeat_penalty=1.1),
    "Creative": SamplingParams(temperature=1.0, top_p=0.98, top_k=100, min_p=0.02, repeat_penalty=1.05),
    "Deterministic": SamplingParams(temperature=0.0, top_p=1.0, top_k=1, min_p=0.0, repeat_penalty=1.0, seed=0),
}


@dataclass(frozen=True)
class ModelInfo:
    path: str
    architecture: str
    n_ctx: int
    n_ctx_train: int
    n_layer: int
    n_gpu_layers: int
    device: str
    template_source: str  # "gguf" (the model's own Jinja template) or "builtin"
    template_name: str  # "model's template" or the llama.cpp built-in name (chatml, llama3, ...)
    template_note: str  # one sentence for the UI
    load_seconds: float
    params: dict[str, Any] = field(default_factory=dict)
    draft_model: str | None = None  # the draft model of speculative decoding, when one is loaded
    template_tools: bool = False  # the model's template renders the ``tools`` of a request itself
    # what the template offers for thinking (engine.thinking.TemplateReasoning): reasons, switch, harmony, effort
    reasoning: dict[str, Any] = field(default_factory=dict)
    projector: str | None = None  # the vision projector loaded beside the model: it sees images
    vision_note: str = ""  # why the projector named at load did not load (the model runs without sight)
    # where the model went, from llama.cpp's buffer lines: kind (cpu, gpu, rpc), address, layers, bytes
    devices: list[dict[str, Any]] = field(default_factory=list)
    # the CPU compute threads (engine.threadpool): "2 threads" for a pool kept with the model,
    # "per graph" where the CPU backend offers none and ggml starts them for every graph
    threads: str = ""

    @property
    def vision(self) -> bool:
        return self.projector is not None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelInfo":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Reply:
    text: str
    finish_reason: str  # "stop", "length", "context", "cancelled"
    prompt_tokens: int
    cached_tokens: int  # prompt tokens reused from the KV cache (not processed again)
    completion_tokens: int
    ttft_s: float
    tokens_per_s: float
    dropped_messages: int = 0
    drafted_tokens: int = 0  # speculative decoding: tokens proposed by the draft
    accepted_tokens: int = 0  # ... and accepted by the model (each saved one decode step)
    speculation: str = ""  # with lookup "auto": where the per-model measurement of prompt lookup stands
    reasoning: str = ""  # the reasoning before the answer (``text`` is the answer only), tags removed
    reasoning_tokens: int = 0
    thought_s: float = 0.0  # how long the reasoning streamed
    image_tokens: int = 0  # prompt tokens that are images (in prompt_tokens)

    @property
    def evaluated_prompt_tokens(self) -> int:
        return self.prompt_tokens - self.cached_tokens

    def stats(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("text", "reasoning")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Reply":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
