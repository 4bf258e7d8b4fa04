"""Training data sources: image folders with caption JSONL, and the synthetic shapes dataset."""
