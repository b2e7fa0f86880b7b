"""Models: loading (folders, hub ids, GGUF, adapters), head geometry, the families table and the seam, the one place
that reaches into a model's internals."""
