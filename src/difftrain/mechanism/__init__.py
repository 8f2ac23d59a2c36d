"""Layer 4, the paper's mechanism: feature rank and margins of a trained model (features) and the
synthetic setting of Theorem 1 (theory). Independent of attacks and certify; imports layers 1-3."""
