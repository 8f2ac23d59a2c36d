"""Layer 5, running many: grid files (grid), the Ray driver (grid_engine) and what a worker runs
(grid_worker). Independent of report; imports layers 1-4."""
