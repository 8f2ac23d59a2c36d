"""`python -m difftrain.study`: the user's command, kept at the top of the package; the code is difftrain.report.study."""

from difftrain.report.study import main

if __name__ == "__main__":
    main()
