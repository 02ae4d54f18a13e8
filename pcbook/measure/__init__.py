"""Load and measurement tools: the per-call driver, the multi-process load generator, the bench."""
