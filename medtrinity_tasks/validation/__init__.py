"""Quality validation: Great Expectations suites over each shard's records, and the gate."""
