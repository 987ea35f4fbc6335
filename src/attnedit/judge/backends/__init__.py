"""Judge backends: a local transformers model and an OpenAI-compatible HTTP server."""
