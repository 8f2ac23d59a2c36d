"""difftrain: cross-entropy versus differential training (Nar et al., 2019), as a DVC pipeline.

Sub-packages by layer, each importing only from layers below (checked by import-linter,
``lint-imports``; the contract is in pyproject.toml):

    commands                      the ``difftrain study|compare|grid|report`` console script
    study, compare, grid, fetch   the user's ``python -m difftrain.X`` commands
    report | runs                 reading results | running grids
    mechanism | attacks | certify what a trained model is measured by
    train                         network, objectives, training loop
    data                          CIFAR-10, pair blocks
    core                          errors, params, storage, labels, keys, geometry
"""

__version__ = "0.1.0"
