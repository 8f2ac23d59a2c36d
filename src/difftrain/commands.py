"""`difftrain study|compare|grid|report ...`: one command for the user's tools, as `dvc` and `ray` have.

Each subcommand hands the rest of the command line to its module's ``main``, so
`difftrain study --all` and `python -m difftrain.study --all` are the same call.
"""

import sys


def _study(argv):
    from difftrain.report import study  # each loads only what its subcommand needs
    study.main(argv)


def _compare(argv):
    from difftrain.report import compare
    compare.main(argv)


def _report(argv):
    from difftrain.report import pages
    pages.main(argv)


def _grid(argv):
    from difftrain.runs import grid
    grid.main(argv)


SUBCOMMANDS = {"study": _study, "compare": _compare, "grid": _grid, "report": _report}
USAGE = (f"usage: difftrain {{{','.join(SUBCOMMANDS)}}} ...  (difftrain SUBCOMMAND --help for "
         f"its options)")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[0] + "\n" + USAGE)
        sys.exit(0 if argv else 2)
    if argv[0] not in SUBCOMMANDS:
        print(f"difftrain: unknown subcommand {argv[0]!r}; expected one of "
              f"{', '.join(SUBCOMMANDS)}", file=sys.stderr)
        sys.exit(2)
    sys.argv[0] = f"difftrain {argv[0]}"  # argparse's prog, in usage and error lines
    SUBCOMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
