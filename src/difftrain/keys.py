"""How numbers are named in the metrics files: shared by the stages that write them and read them."""


def eps_key(eps: float) -> str:
    """8 -> 'eps8', 0.5 -> 'eps0_5': metric keys without dots, which DVC reads as nesting."""
    return "eps" + f"{eps:g}".replace(".", "_")
