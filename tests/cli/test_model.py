"""`thingshub model ...` as an operator runs it: a real `serve` process and the CLI in
subprocesses, with the TSL file on disk."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_serve import Server, start_server, stop
from tests.gateway.test_thing import MODEL


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    proc, lines = start_server(tmp_path / "data", env={"THINGSHUB_CONSOLE": "false"})
    srv = Server(proc, tmp_path / "data", lines)
    with srv.api() as api:
        assert api.post("/api/v1/products", json={"id": "gh", "name": "Greenhouse"}).status_code
    yield srv
    if proc.poll() is None:
        code, out = stop(proc)
        assert code == 0, out


def write(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return path


def test_set_show_and_delete(server: Server, tmp_path: Path) -> None:
    missing = server.cli("model", "show", "gh", check=False)
    assert missing.returncode == 1 and "no thing model" in missing.stderr

    tsl = write(tmp_path / "gh.json", MODEL)
    out = server.cli("model", "set", "gh", str(tsl)).stdout
    assert "revision 1 (2 properties, 1 events, 2 services)" in out
    again = json.loads(server.cli("model", "set", "gh", str(tsl), "--json").stdout)
    assert again["revision"] == 2 and again["services"][1]["callType"] == "a"

    shown = server.cli("model", "show", "gh").stdout
    assert "Thing model of gh: revision 2" in shown
    for text in ("Properties", "temp", "Temperature", "float", "-40 … 125 °C", "rw"):
        assert text in shown, text
    for text in ("Events", "alarm", "alert", "level: int32"):
        assert text in shown, text
    for text in ("Services", "add", "sync", "a: int32", "b: int32", "c: int64", "reboot", "async"):
        assert text in shown, text
    as_json = json.loads(server.cli("model", "show", "gh", "--json").stdout)
    with server.api() as api:
        assert as_json == api.get("/api/v1/products/gh/thing-model").json()

    assert "deleted the thing model of gh" in server.cli("model", "delete", "gh").stdout
    assert server.cli("model", "show", "gh", check=False).returncode == 1


def test_a_refused_model_names_the_json_pointer_of_its_fault(
    server: Server, tmp_path: Path
) -> None:
    broken = json.loads(json.dumps(MODEL))
    broken["services"][0]["input"][1]["dataType"]["type"] = "integer"
    refused = server.cli("model", "set", "gh", str(write(tmp_path / "b.json", broken)), check=False)
    assert refused.returncode == 1
    assert "the model is refused at /services/0/input/1/dataType/type: must be one of" in (
        refused.stderr
    )
    assert "HTTP 400" in refused.stderr
    twice = json.loads(json.dumps(MODEL))
    twice["events"][0]["identifier"] = "temp"
    refused = server.cli("model", "set", "gh", str(write(tmp_path / "t.json", twice)), check=False)
    assert refused.returncode == 1
    assert "at /events/0/identifier: temp is already used at /properties/0" in refused.stderr
    with server.api() as api:  # nothing was stored
        assert api.get("/api/v1/products/gh/thing-model").status_code == 404


def test_files_that_are_not_a_model(server: Server, tmp_path: Path) -> None:
    garbled = tmp_path / "garbled.json"
    garbled.write_text('{"properties": [\n  {"identifier": "t",}\n]}')
    result = server.cli("model", "set", "gh", str(garbled), check=False)
    assert result.returncode == 1 and "is not JSON" in result.stderr
    assert "(line 2, column 22)" in result.stderr
    result = server.cli("model", "set", "gh", str(tmp_path / "nowhere.json"), check=False)
    assert result.returncode == 1 and "cannot read" in result.stderr
    listed = server.cli("model", "set", "gh", str(write(tmp_path / "l.json", [])), check=False)
    assert listed.returncode == 1 and "HTTP 400" in listed.stderr
    other = server.cli("model", "set", "nope", str(write(tmp_path / "m.json", MODEL)), check=False)
    assert other.returncode == 1 and "HTTP 404" in other.stderr
    # A BOM (as some editors save) is fine.
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps(MODEL).encode())
    assert "revision 1" in server.cli("model", "set", "gh", str(bom)).stdout
