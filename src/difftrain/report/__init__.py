"""Layer 5, reading results: plots, two-run comparison (compare), the cross-run statistics (crossrun)
and the study of many runs (study). Independent of runs; imports layers 1-4."""
