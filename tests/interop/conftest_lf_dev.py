"""Development-only pytest plugin: a ``relay_url`` fixture backed by a reference server.

Not loaded automatically (the name is not ``conftest.py``); ``tests/conftest.py`` provides the
real ``relay_url``. Use it to check the scenarios themselves, from the repository root
(``--confcutdir`` keeps ``tests/conftest.py``, whose ``relay_url`` would win, from loading):

    .venv/bin/python -m pytest -p tests.interop.conftest_lf_dev --confcutdir=tests/interop \
        -p no:django tests/interop

``INTEROP_DEV_SERVER`` picks the server, started fresh for every test (LF crashes on some
malformed frames, and one crash must not fail the tests after it):

- ``lf`` (default): the open-source Local First Relay, ``lf-server.mjs``. Tests of the v3 dialect
  (and ``hello_v3``) get ``@localfirst/relay@3.6.2``, the others ``4.2.2``; the mixed scenarios
  fail on either, since neither LF version speaks both dialects.
- ``spec``: ``spec-server.mjs``, a small model of docs/protocol.md; everything must pass.

``INTEROP_DEV_PREFIX`` (e.g. ``/t/abc``) is appended to the URL, to exercise path prefixes
(``spec`` only; LF does not accept prefixes).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture
def relay_url(request):
    request.getfixturevalue("npm_clients_built")  # lf-server.mjs loads 4.2.2 from build/
    params = getattr(request.node, "callspec", None)
    params = params.params if params else {}
    kind = os.environ.get("INTEROP_DEV_SERVER", "lf")
    if kind == "spec":
        cmd = ["node", "spec-server.mjs", "0"]
    elif kind == "lf":
        v3 = params.get("dialect") == "v3" or params.get("script") == "hello_v3"
        cmd = ["node", "lf-server.mjs", "0", *(["--v3"] if v3 else [])]
    else:
        raise pytest.UsageError(f"INTEROP_DEV_SERVER must be lf or spec, not {kind!r}")

    proc = subprocess.Popen(
        cmd, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        line = proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"{' '.join(cmd)} did not report its URL within 15 s")
        info = json.loads(line)
        print(f"relay_url: {info}")
        yield info["url"] + os.environ.get("INTEROP_DEV_PREFIX", "")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err = proc.stderr.read()
        if err.strip():
            print(f"--- {' '.join(cmd)} stderr ---\n{err}")
