"""Layer 4, attacks: the paper's PGD and CW (foolbox_attacks), AutoAttack's (autoattack_attacks), the
per-image worst case (robustness, attack) and the soundness flags (diagnostics). Independent of
mechanism and certify; imports layers 1-3."""
