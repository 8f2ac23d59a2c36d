"""Layer 5, running many: grid files and their runs (spec), the Ray driver (grid_engine), what a
worker runs (grid_worker) and the command (grid). Independent of report; imports layers 1-4."""
