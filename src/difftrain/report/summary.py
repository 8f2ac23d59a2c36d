"""The headline numbers of one run (``metrics/summary.json``), flat keys read from the stages'
metrics, each checked and named by file and key when missing or out of range."""

from __future__ import annotations

from difftrain.core.errors import DataError
from difftrain.core.io import accuracy_field, field
from difftrain.core.keys import eps_key

SPLITS = ("train", "test")
TRAIN_JSON, FEATURES_JSON, ATTACK_JSON = ("metrics/train.json", "metrics/features.json",
                                         "metrics/attack.json")
CERTIFY_JSON = "metrics/certify.json"


def headline(train: dict, features: dict, attack: dict, eps_255: float, eps_l2: float,
             certify: dict | None = None) -> dict:
    """The numbers a CE-versus-differential comparison turns on, under flat readable keys:
    ``robust_*`` and ``l2_*`` are the worst case over all attacks (the numbers to report),
    ``pgd_*`` and ``cw_*`` the paper's attacks alone. A missing section or key, or an accuracy
    outside [0, 1], is refused naming the file and the key."""
    def pick(split: str, kind: str, eps: float, grid: str) -> float:
        key = eps_key(eps)
        if key not in field(attack, f"{split}.{kind}", ATTACK_JSON):
            raise DataError(f"metrics/attack.json has no {kind} accuracy at epsilon {eps:g} "
                            f"({split}); add it to attack.{grid} or change "
                            f"plot.headline_{'eps_255' if grid == 'pgd.epsilons' else 'eps_l2'}")
        return accuracy_field(attack, f"{split}.{kind}.{key}.accuracy", ATTACK_JSON)

    def anywhere(flag: str) -> bool:
        return any(field(attack, f"{split}.soundness.{flag}", ATTACK_JSON) is True
                   for split in ("train", "test"))

    def mechanism(split: str, key: str):
        return field(attack, f"{split}.mechanism.{key}", ATTACK_JSON)

    tag, tag_l2 = eps_key(eps_255).removeprefix("eps"), eps_key(eps_l2).removeprefix("eps")
    return {
        "clean_test_accuracy": accuracy_field(train, "test_accuracy", TRAIN_JSON),
        "clean_train_accuracy": accuracy_field(train, "train_accuracy", TRAIN_JSON),
        **{f"robust_{s}_accuracy_at_{tag}": pick(s, "worst", eps_255, "pgd.epsilons") for s in SPLITS},
        **{f"pgd_{s}_accuracy_at_{tag}": pick(s, "pgd", eps_255, "pgd.epsilons") for s in SPLITS},
        **({f"certified_{s}_accuracy_at_{tag}": accuracy_field(
            certify, f"{s}.certified.{eps_key(eps_255)}.accuracy", CERTIFY_JSON)
            for s in SPLITS} if certify is not None else {}),
        **{f"l2_{s}_accuracy_at_l2_{tag_l2}": pick(s, "l2_worst", eps_l2, "l2_epsilons")
           for s in SPLITS},
        **{f"cw_{s}_accuracy_at_l2_{tag_l2}": pick(s, "cw", eps_l2, "l2_epsilons") for s in SPLITS},
        "l2_test_median": field(attack, "test.median_l2.worst", ATTACK_JSON),
        "cw_test_median_l2": field(attack, "test.median_l2.cw", ATTACK_JSON),
        **{f"feature_{key}": field(features, f"train.{key}", FEATURES_JSON)
           for key in ("components_90", "components_95", "components_99", "numerical_rank")},
        "feature_effective_rank": field(features, "train.effective_rank", FEATURES_JSON),
        "margin_ratio": field(features, "optimum.margin_ratio", FEATURES_JSON),
        **{f"{name}_{split}_{suffix}": mechanism(split, key)
           for split in SPLITS
           for name, key, suffix in (("first_order_margin", "first_order_margin_median_255", "median"),
                                     ("gradient_l1", "gradient_l1_median", "median"),
                                     ("margin_radius", "margin_radius_spearman", "spearman"))},
        **{flag: anywhere(flag) for flag in ("suspect_gradient_masking", "paper_attack_overstates",
                                             "blackbox_beats_whitebox", "not_converged",
                                             "cw_overstates_l2")},
    }
