"""`python -m server`: the server side of `fleetgate`."""

from server.cli import run

run()
