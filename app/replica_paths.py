"""Where replicas live: a module of its own so commands can name the place cheaply."""

from __future__ import annotations

from pathlib import Path


def default_replica_dir() -> Path:
    """Where replicas are kept unless told otherwise: the user's data directory."""
    import platformdirs  # noqa: PLC0415 - only when no --replica-dir is given (12 ms)

    return Path(platformdirs.user_data_dir("Fleetgate", appauthor=False)) / "replicas"
