"""`thingshub cert create`: the private CA and server certificate of certs.py, from the shell.

Rules:
- A bad `--host`, a half-present CA or server files that exist without
  `--force` is one line on stderr and exit status 2; nothing is written then.
- The output says what to do next: which file devices trust, and the
  `serve` options that use the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

cert_app = typer.Typer(help="TLS certificates for the MQTT and HTTPS listeners.")


@cert_app.command("create")
def create(
    host: Annotated[
        list[str],
        typer.Option(
            "--host",
            help="A DNS name or IP address devices connect to (repeatable; at least one).",
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Directory to write the four files to.")
    ] = Path("."),
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace an existing server certificate (the CA is kept)."),
    ] = False,
) -> None:
    """Make a private CA (unless DIR has one) and a server certificate for the hosts.

    Writes ca.pem and ca-key.pem (the CA: devices trust ca.pem; keep ca-key.pem
    offline), server.pem and server-key.pem (for serve --tls-cert/--tls-key).
    Keys are EC P-256 and written mode 0600.
    """
    from thingshub.certs import CertError
    from thingshub.certs import create as make

    try:
        made = make(out, host, force=force)
    except CertError as exc:
        typer.echo(f"thingshub: error: {exc}", err=True)
        raise typer.Exit(2) from None
    if made.ca_created:
        typer.echo(f"CA written: {made.ca_cert} (and its key beside it, mode 0600)")
    else:
        typer.echo(f"CA kept: {made.ca_cert}")
    typer.echo(f"CA SHA-256 fingerprint: {made.ca_fingerprint}")
    typer.echo(
        f"server certificate for {', '.join(host)} written: {made.server_cert}, key"
        f" {made.server_key}; valid until {made.expires.date().isoformat()}"
    )
    typer.echo(
        f"serve with: thingshub serve --tls-cert {made.server_cert} --tls-key {made.server_key}"
    )
    typer.echo(f"devices trust {made.ca_cert}")


def register(app: typer.Typer) -> None:
    app.add_typer(cert_app, name="cert")
