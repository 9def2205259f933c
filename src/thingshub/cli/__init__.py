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


def main() -> None:
    from thingshub.cli import cert, cluster, demo, devices, keys, model, ota, serve, simulate

    serve.register(app)
    cert.register(app)
    devices.register(app)
    model.register(app)
    ota.register(app)
    keys.register(app)
    cluster.register(app)
    simulate.register(app)
    demo.register(app)
    app(prog_name="thingshub")


if __name__ == "__main__":  # pragma: no cover
    main()
