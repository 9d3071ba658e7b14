"""Domain functions: they take plain values, own their transaction, raise domain errors."""
