import os
import warnings

warnings.filterwarnings("ignore", category=FutureWarning)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def cli_binary():
    """The `langevin` program built from this checkout (CARGO_TARGET_DIR/debug), if any."""
    explicit = os.environ.get("LANGEVIN_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    for profile in ("debug", "release"):
        p = os.path.join(target, profile, "langevin")
        if os.path.isfile(p):
            return p
    return None
