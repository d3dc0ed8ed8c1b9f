"""Generation of the multigranular description: prompt, engines, output parsing."""

ENGINES = ("template", "openai", "vllm")
"""Description engines by name (a run's ``engine`` param); kept here, import-light, for the DAG form."""
