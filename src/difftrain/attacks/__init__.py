"""Layer 4, attacks: the paper's PGD and CW (foolbox_attacks), AutoAttack's (autoattack_attacks),
the sweeps that turn them into robust accuracy (sweeps), one split's worst case and soundness
checks (split_attack), which attacks run in what order (attack) and the mechanism diagnostics
(diagnostics). Independent of mechanism and certify; imports layers 1-3."""
