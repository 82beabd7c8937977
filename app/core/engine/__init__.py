"""The llama.cpp engine: a host process (``host``) and the parent-side client (``client``)."""

from app.core.engine.client import EngineClient
from app.core.engine.protocol import ModelInfo, Reply, SamplingParams

__all__ = ["EngineClient", "ModelInfo", "Reply", "SamplingParams"]
