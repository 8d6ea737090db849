"""The README's "From a pipeline" snippets stay true: their commands and options exist."""

from __future__ import annotations

import re
import shlex
import subprocess

from devenv.temporal import temporal_cli
from starter.cli import build_parser
from tests.cli.helpers import ROOT


def section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## From a pipeline")
    return text[start:text.index("\n## ", start + 1)]


def snippets() -> list[str]:
    """The fenced code blocks of the section, and inline code that gives options (a command, not a name)."""
    text = section()
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    inline = [span for span in re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
              if " -" in span]
    return blocks + inline


def commands(program: str) -> list[list[str]]:
    """Every ``program ...`` command in the snippets, as words, with shell expansions made harmless."""
    found = []
    for snippet in snippets():
        for line in snippet.replace("\\\n", " ").splitlines():  # continuation lines joined
            for match in re.finditer(rf"(?:^|[\s:;&|(]){program} ([^&|;>]+)", line):
                words = shlex.split(re.sub(r"\$\{\{[^}]*\}\}|\$\w+", "x", match.group(1)).split("#")[0])
                found.append([w for w in words if w != "\\"])
    return found


def test_every_canaryctl_command_parses() -> None:
    found = commands("canaryctl")
    assert len(found) >= 6
    for words in found:
        args = build_parser(words).parse_args(words)  # SystemExit (and the test fails) on an unknown option
        assert callable(args.func), words
    used = {words[0] for words in found}
    assert {"lint", "set-image", "status", "convert"} <= used


def test_temporal_cli_commands_exist() -> None:
    found = commands("temporal")
    global_options = subprocess.run([str(temporal_cli()), "options"], capture_output=True, text=True,
                                    timeout=60).stdout  # -o/--output is one of them
    assert {tuple(words[:3]) for words in found} >= {("workflow", "query", "-w"), ("workflow", "update", "execute")}
    for words in found:
        verb = [w for w in words[:3] if not w.startswith("-")]
        result = subprocess.run([str(temporal_cli()), *verb, "--help"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        for option in (w for w in words if w.startswith("--") or w in ("-w", "-o")):
            assert option.split("=")[0] in result.stdout + global_options, (verb, option)


def test_curl_paths_are_api_routes() -> None:
    from starter.api.app import create_app

    async def no_client() -> object:
        raise AssertionError("not called")

    from starter.api.auth import TokenStore

    paths = set(create_app(no_client, TokenStore([])).openapi()["paths"])  # type: ignore[arg-type]
    assert "/api/v1/namespaces/{namespace}/jobs/{name}" in paths
    assert "/api/v1/namespaces/{namespace}/jobs/{name}/update-version" in paths
    assert "api=http://127.0.0.1:8080/api/v1/namespaces/shop/jobs/web" in section()
