"""Every test of this tier runs the pipeline, whose retrieval stage reads the demo knowledge index."""

import pytest


@pytest.fixture(scope="session", autouse=True)
def _knowledge_index(knowledge_dir):
    return knowledge_dir
