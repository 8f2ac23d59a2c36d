"""How numbers are named in the metrics files: shared by the stages that write them and read them."""


def eps_key(eps: float) -> str:
    """8 -> 'eps8', 0.5 -> 'eps0_5': metric keys without dots, which DVC reads as nesting."""
    return "eps" + f"{eps:g}".replace(".", "_")


def flatten(tree: dict, prefix: str = "") -> dict:
    """{'train': {'lr': 0.1}} -> {'train.lr': 0.1}: dotted keys, as params and exp show name them."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
