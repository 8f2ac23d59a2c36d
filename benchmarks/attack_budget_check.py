"""Does attacking fewer images change anything but the sample? One run, per image.

    python benchmarks/attack_budget_check.py REDUCED DEFAULT [REDUCED DEFAULT ...]

Each pair: two experiments identical but for ``attack.n_train`` / ``attack.n_test`` (e.g. a run
of ``grids/classpairs.yaml`` at 200 + 200 images and its twin of ``grids/default-budget.yaml`` at
500 + 500). The attacked images are drawn per class by the same seeded permutation
(``robustness.stratified``), so the smaller set is inside the larger one. Per split it prints
the share of the common images whose smallest fooling radius is identical in both runs, and the
worst-case accuracy at 2, 4 and 8/255 three ways: the reduced run, the default run on the same
images, and the default run on all of its images. Identical radii mean the reduced budget
changes only the sample, and the gap to the default run is sampling error.
Reads ``data/attack/per_image.csv`` of each experiment through ``dvc.api`` (cache or remote).
"""

from __future__ import annotations

import argparse
import io
import subprocess

import dvc.api
import pandas as pd

RADII = (2, 4, 8)


def per_image(name: str) -> pd.DataFrame:
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", f"refs/exps/**/{name}"],
                          capture_output=True, text=True, check=True).stdout.split()
    if not refs:
        raise SystemExit(f"{name}: no such experiment here (dvc exp pull origin {name})")
    return pd.read_csv(io.StringIO(dvc.api.read("data/attack/per_image.csv", rev=refs[0])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="+", help="REDUCED DEFAULT pairs")
    args = parser.parse_args()
    if len(args.experiments) % 2:
        parser.error("experiments come in pairs: REDUCED DEFAULT")
    for small, large in zip(args.experiments[0::2], args.experiments[1::2]):
        a, b = per_image(small), per_image(large)
        for split in ("train", "test"):
            r, d = a[a["split"] == split], b[b["split"] == split]
            common = r.merge(d, on=["split", "position"], suffixes=("_r", "_d"))
            same = (common["worst_min_eps_255_r"] == common["worst_min_eps_255_d"]).mean()
            cells = [f"{e}/255 {100 * (r['worst_min_eps_255'] > e).mean():.1f} | "
                     f"{100 * (common['worst_min_eps_255_d'] > e).mean():.1f} | "
                     f"{100 * (d['worst_min_eps_255'] > e).mean():.1f}" for e in RADII]
            print(f"{small} vs {large} {split}: {len(r)} / {len(d)} images, {len(common)} common, "
                  f"identical radius on {100 * same:.1f}%; worst case % reduced | default on the "
                  f"same images | default on all: {'; '.join(cells)}")


if __name__ == "__main__":
    main()
