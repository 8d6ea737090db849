"""``canary-worker`` refuses a heartbeat interval it cannot honour, naming the flag and its variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).resolve().parent.parent / "worker.py"


def _worker(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(WORKER), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env}, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(("args", "env", "said"), [
    (["--heartbeat-seconds", "9"], {}, "at most 4, not 9"),
    (["--heartbeat-seconds", "0"], {}, "more than 0"),
    ([], {"CANARY_HEARTBEAT_SECONDS": "-1"}, "CANARY_HEARTBEAT_SECONDS"),
    ([], {"CANARY_HEARTBEAT_SECONDS": "soon"}, "invalid float value: 'soon'"),
])
def test_a_heartbeat_interval_out_of_range_is_a_usage_error(args: list[str], env: dict[str, str], said: str) -> None:
    result = _worker(*args, **env)
    assert result.returncode == 2
    assert "--heartbeat-seconds" in result.stderr and said in result.stderr
