"""Layer 1, the foundation: errors, metric keys, labels, storage, the params schema, seeding and
devices, provenance, the stage entry point and linear-classifier geometry. Imports nothing of difftrain
above it."""
