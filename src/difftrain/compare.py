"""`python -m difftrain.compare`: the user's command, kept at the top of the package; the code is difftrain.report.compare."""

from difftrain.report.compare import main

if __name__ == "__main__":
    main()
