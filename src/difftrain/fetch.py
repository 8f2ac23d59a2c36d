"""`python -m difftrain.fetch` (`make data`): the user's command, kept at the top of the package; the
code is difftrain.data.fetch."""

from difftrain.core.cli import run_stage
from difftrain.data.fetch import main

if __name__ == "__main__":
    run_stage(main)
