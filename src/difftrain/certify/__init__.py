"""Layer 4, certification: IBP, CROWN-IBP and CROWN for this network (bounds) and the per-image
cascade of certified radii (cascade). Independent of mechanism and attacks; imports layers 1-3."""
