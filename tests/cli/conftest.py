"""The CLI tests use the same exported nano model as tests/runtime (see its conftest)."""
from tests.runtime.conftest import exported, graph_cache, model_copy  # noqa: F401  (pytest fixtures)
