"""Job processing (placeholder module imported by the embedded worker)."""
