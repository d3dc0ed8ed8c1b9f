"""Generation of the multigranular description: prompt, engines, output parsing."""
