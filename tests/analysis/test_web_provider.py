"""The web provider against a small HTTP server on 127.0.0.1: JSON paths, methods, timeouts, errors."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from activities.metrics import MeasurementPhase, MeasureRequest, measure
from devenv.processes import free_port


class Handler(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, Any]]] = []

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())

    def _answer(self, body: str = "") -> None:
        Handler.seen.append({"method": self.command, "path": self.path, "body": body,
                             "service": self.headers.get("X-Service")})
        if self.path == "/slow":
            time.sleep(3)
        if self.path == "/broken":
            self.send_response(503)
            self.end_headers()
            return
        payloads: dict[str, bytes] = {
            "/metrics": json.dumps({"data": {"rates": [{"ok": 0.995}, {"ok": "0.5"}], "up": True,
                                             "idle": None, "name": "web"}}).encode(),
            "/text": b"<html>not json</html>",
        }
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payloads.get(self.path.split("?")[0], payloads["/metrics"]))

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def web(url: str, path: str, **settings: Any) -> MeasureRequest:
    return MeasureRequest.model_validate({
        "metric": "smoke", "provider": {"web": {"url": url, "jsonPath": path, **settings}},
        "successCondition": "result >= 0.99", "failureCondition": "result < 0.9"})


def test_get_picks_the_value_by_json_path(server: str) -> None:
    answer = measure(web(f"{server}/metrics", "$.data.rates[0].ok"))
    assert (answer.phase, answer.value) == (MeasurementPhase.SUCCESSFUL, 0.995)
    numeric_string = measure(web(f"{server}/metrics", "{$.data.rates[1].ok}"))
    assert (numeric_string.phase, numeric_string.value) == (MeasurementPhase.FAILED, 0.5)
    boolean = measure(web(f"{server}/metrics", "$.data.up"))
    assert (boolean.phase, boolean.value) == (MeasurementPhase.SUCCESSFUL, 1.0)


def test_post_sends_body_and_headers(server: str) -> None:
    Handler.seen.clear()
    answer = measure(web(f"{server}/metrics", "$.data.rates[0].ok", method="POST", body='{"service": "web"}',
                         headers=[{"key": "X-Service", "value": "web"}]))
    assert answer.phase is MeasurementPhase.SUCCESSFUL
    assert Handler.seen == [{"method": "POST", "path": "/metrics", "body": '{"service": "web"}', "service": "web"}]


def test_null_is_no_data_and_inconclusive(server: str) -> None:
    answer = measure(web(f"{server}/metrics", "$.data.idle"))
    assert (answer.phase, answer.value) == (MeasurementPhase.INCONCLUSIVE, None)


@pytest.mark.parametrize(("path", "json_path", "settings", "message"), [
    ("/metrics", "$.data.missing", {}, "$.data has no key 'missing'"),
    ("/metrics", "$.data.rates[5].ok", {}, "$.data.rates has no item [5]"),
    ("/metrics", "$.data.name", {}, "gave 'web', not a number"),
    ("/metrics", "$.data.rates", {}, "gave a list, not a number"),
    ("/text", "$.a", {}, "did not answer JSON"),
    ("/broken", "$.a", {}, "answered HTTP 503"),
    ("/slow", "$.a", {"timeoutSeconds": 1}, "timed out after 1s"),
])
def test_bad_answers_are_errors_that_say_why(server: str, path: str, json_path: str, settings: dict[str, Any],
                                             message: str) -> None:
    answer = measure(web(f"{server}{path}", json_path, **settings))
    assert answer.phase is MeasurementPhase.ERROR
    assert message in answer.message


def test_an_unreachable_endpoint_is_an_error() -> None:
    answer = measure(web(f"http://127.0.0.1:{free_port()}/metrics", "$.a"))
    assert answer.phase is MeasurementPhase.ERROR and "unreachable" in answer.message
