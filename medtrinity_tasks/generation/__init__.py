"""Generation of the multigranular description: prompt, engines, output parsing."""

ENGINES = ("template", "openai", "vllm")
"""Description engines by name (a run's ``engine`` param); kept here, import-light, for the DAG form."""

PROMPT_VERSIONS = {"template": "template-v3", "openai": "medtrinity-v1", "vllm": "medtrinity-v1"}
"""The prompt version each engine writes with: its stage's ``version``, and what a manifest's ``generator``
and the backfill compare, read here without importing any engine."""
