"""The data sets bundled with langevin (the CSV files of the repository's ``data/``)."""

from . import _langevin


def names():
    """The bundled data sets' names."""
    return [n for n, *_ in _langevin.bundled_names()]


def describe():
    """``{name: {"target", "task", "description"}}`` of every bundled data set."""
    return {
        n: {"target": t, "task": k, "description": d}
        for n, t, k, d in _langevin.bundled_names()
    }


def load(name, target=None, return_names=False):
    """A bundled data set as ``(X, y)`` (``X``: rows x features, float64).

    With ``return_names=True``: ``(X, y, feature_names, target_name)``.
    """
    X, y, features, target_name = _langevin.bundled_load(str(name), target)
    if return_names:
        return X, y, features, target_name
    return X, y
