"""The local API server: OpenAI- and Anthropic-compatible endpoints over the same core as the chat
window (the library's models, the planner's Auto parameters, the engine in its own process).

``service`` (settings, catalog, pool, request records) has no HTTP; ``http`` is the Starlette app;
``run.ApiServer`` runs it with uvicorn, in the foreground (``quantdesk serve``) or on a thread (GUI).
"""

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8080
DEFAULT_QUEUE = 16  # requests that may wait per model before 429
