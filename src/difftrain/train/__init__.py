"""Layer 3, training: the network (model), the objectives of eqs. 2, 6 and 7 (objectives),
adversarial training (adversarial) and the loop (trainer). Imports only data and core."""
