"""The llama.cpp engine: a host process (``host``, the child side) and the parent-side client
(``client.EngineClient``), speaking JSON lines (``protocol``). This package's own namespace holds
only the protocol's data types, so that the host never imports the client."""

from app.core.engine.protocol import ModelInfo, Reply, SamplingParams

__all__ = ["ModelInfo", "Reply", "SamplingParams"]
