"""Every test of this tier runs the pipeline, whose retrieval stage reads the demo knowledge index."""

import pytest

from tests.support import servers


@pytest.fixture(scope="session", autouse=True)
def _knowledge_index(knowledge_dir):
    return knowledge_dir


@pytest.fixture(scope="session")
def gemma_model(tmp_path_factory):
    """The packaged Gemma 3 270M GGUF that the llama.cpp server tests serve."""
    return servers.gemma_model(tmp_path_factory.mktemp("gemma"))
