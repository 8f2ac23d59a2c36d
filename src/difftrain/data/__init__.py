"""Layer 2, data: CIFAR-10 read and checked (cifar), the cross-class pair blocks (pairs), the
source fetched when missing (fetch). Imports only core."""
