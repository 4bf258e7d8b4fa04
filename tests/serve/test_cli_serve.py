"""`tipsv2 serve` argument checks (before any heavy import) and the API key."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

from click.testing import CliRunner


def run(*args):
    from tipsv2_sdk.cli.app import cli

    return CliRunner().invoke(cli, ["serve", *map(str, args)])


def test_bad_arguments_exit_2_with_one_line(tmp_path, serve_index):
    result = run(tmp_path / "missing")
    assert result.exit_code == 2 and "no such index directory" in result.output
    (tmp_path / "empty").mkdir()
    result = run(tmp_path / "empty")
    assert result.exit_code == 2 and "empty" in result.output
    result = run(serve_index, "--host", "0.0.0.0")
    assert result.exit_code == 2 and "--api-key" in result.output
    result = run(serve_index, serve_index)
    assert result.exit_code == 2 and "both be served" in result.output


def test_refusals_import_nothing_heavy(tmp_path):
    code = ("import sys; from click.testing import CliRunner; from tipsv2_sdk.cli.app import cli; "
            f"r = CliRunner().invoke(cli, ['serve', {str(tmp_path / 'missing')!r}]); "
            "print(r.exit_code, [m for m in ('torch', 'fastapi', 'faiss', 'transformers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout.split()
    assert out == ["2", "[]"], out


def test_api_key_is_required_when_set(serve_index, start_server):
    run = start_server([serve_index], api_key="s3cret")

    def status(headers):
        req = urllib.request.Request(run.url + "/indices-list", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    assert status({})[0] == 401
    assert status({"Authorization": "Bearer wrong"})[0] == 401
    assert status({"Authorization": "Bearer s3cret"}) == (200, ["photos"])
