"""What the tests (and the benchmarks) share: server launchers, record builders, corpora of bad inputs."""

SOURCE_ID = "synthetic_ct_abdomen"
"""The sample source most tests run: four CT phantoms with their label maps."""
