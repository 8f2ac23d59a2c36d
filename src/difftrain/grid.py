"""`python -m difftrain.grid`: the user's command, kept at the top of the package; the code is difftrain.runs.grid."""

from difftrain.runs.grid import main

if __name__ == "__main__":
    main()
