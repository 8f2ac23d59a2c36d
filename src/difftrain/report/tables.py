"""The stages' plot tables read back and checked: a CSV or TSV with the columns a reader needs,
accuracies in [0, 1], and an error naming the file and the stage that writes it. Shared by the
figures, the summary and the certify stage (which reads the attack stage's per-image table)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from difftrain.core.errors import DataError
from difftrain.core.io import written_by


def read_table(path: str | Path, columns: list[str], sep: str = ",") -> pd.DataFrame:
    """A CSV (or TSV) with at least ``columns``; a clear error naming the file, what is wrong
    and the stage that writes it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: plot table not found{written_by(path)}")
    try:
        table = pd.read_csv(path, sep=sep)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable table ({exc}){written_by(path)}") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; has "
                        f"{', '.join(table.columns)}{written_by(path)}")
    for column in (c for c in columns if "accuracy" in c):
        values = pd.to_numeric(table[column], errors="coerce")
        bad = values.isna() | (values < 0) | (values > 1)
        if bad.any():
            raise DataError(f"{path}: column {column} must hold accuracies in [0, 1]; got "
                            f"{table[column][bad].iloc[0]} in row {int(bad.idxmax()) + 1}"
                            f"{written_by(path)}")
    return table


def read_tables(paths, columns: list[str]) -> pd.DataFrame:
    return pd.concat([read_table(p, columns) for p in paths], ignore_index=True)


def read_training_log(folder: str | Path) -> pd.DataFrame:
    """dvclive's per-metric TSVs merged into one table with an ``epoch`` column."""
    folder = Path(folder)
    names = ["loss", "train_accuracy", "test_accuracy"]
    tables = [read_table(folder / f"{n}.tsv", ["step", n], sep="\t")[["step", n]] for n in names]
    merged = tables[0]
    for t in tables[1:]:
        merged = merged.merge(t, on="step")
    return merged.assign(epoch=merged["step"] + 1)
