"""asc-search: budgeted Ray Tune + Optuna search over low-complexity acoustic scene classifiers distilled from a
large teacher (DCASE Task 1)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
