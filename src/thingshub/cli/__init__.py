"""The `thingshub` command: one Typer app, its subcommands in the modules beside.

Rules:
- `serve.py` runs servers (`serve`, `broker`); `cert.py` makes TLS
  certificates (`cert create`) and needs no server; `devices.py` (`product`,
  `device`), `model.py` (`model`), `ota.py` (`firmware`, `ota`), `keys.py`
  (`key`) and `cluster.py` (`cluster`) are HTTP
  clients of a running server and never open the database; `client.py` is
  how they reach it, `options.py` the options they share. `simulate.py`
  (`simulate`) is a client too, running devices of the SDK; `demo.py`
  (`demo`) runs the platform and such a fleet in one process.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated

import typer

app = typer.Typer(
    name="thingshub",
    help="ThingsHub: a self-hosted IoT device-access platform.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """ThingsHub: a self-hosted IoT device-access platform."""
    if version:
        from thingshub import __version__

        typer.echo(__version__)
        raise typer.Exit()
    if ctx.invoked_subcommand is None:  # options but no command: say what there is
        typer.echo(ctx.get_help())
        raise typer.Exit(2)


#: The module of each command, in the order `--help` lists them. `main` imports
#: only the module of the command a command line names: a client command such as
#: `thingshub product list` then starts without importing the platform and the
#: console (NiceGUI), a second or more of its run time.
COMMANDS = {
    "broker": "serve",
    "serve": "serve",
    "cert": "cert",
    "product": "devices",
    "device": "devices",
    "model": "model",
    "firmware": "ota",
    "ota": "ota",
    "key": "keys",
    "cluster": "cluster",
    "simulate": "simulate",
    "demo": "demo",
}


def main() -> None:
    named = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    if named in COMMANDS:
        modules = [COMMANDS[named]]
    elif named is None and "--version" in sys.argv[1:]:
        modules = []  # the root callback answers before any command would run
    else:  # no command, or an unknown one: all, for the help or the error
        modules = list(dict.fromkeys(COMMANDS.values()))
    for module in modules:
        importlib.import_module(f"thingshub.cli.{module}").register(app)
    app(prog_name="thingshub")


if __name__ == "__main__":  # pragma: no cover
    main()
