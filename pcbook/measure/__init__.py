"""Load and measurement tools: the per-call driver, the multi-process load generator, the stream probe, h2load,
CPU placement, their statistics and verdicts. The bench that composes them is pcbook.bench; `make soak` is
pcbook.workbook.soak."""
