"""``canaryctl dev``: start, inspect, stop and reset the local development environment.

The one door from the clients into ``devenv``: ``starter.cli`` mounts these sub-commands with
:func:`register` and the demo finds the running environment with :func:`running_state`;
nothing in ``starter`` imports another ``devenv`` module (import-linter checks it). Also runs
alone as ``python -m devenv.cli up|down|status|reset``.

Failures raise :class:`DevError`; the caller prints them as ``error: ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from devenv.processes import owned, port_in_use
from devenv.supervisor import control
from devenv.supervisor.state import (
    DEFAULT_API_PORT,
    DEFAULT_HOME,
    DEFAULT_PORT,
    DEFAULT_UI_PORT,
    LOG_FILE,
    DevError,
    DevState,
    Options,
    default_worker_script,
    read_state,
    supervisor_pid,
)

__all__ = ["DEFAULT_HOME", "DevError", "DevState", "build_parser", "main", "register", "running_state"]


def _out(text: str) -> None:
    print(text, flush=True)


def running_state(state_dir: Path = DEFAULT_HOME) -> DevState | None:
    """The environment running in ``state_dir``, or None if none is (fully) up."""
    state = read_state(state_dir)
    return state if state is not None and supervisor_pid(state_dir) is not None else None


def print_state(state: DevState) -> None:
    """Addresses and the exports a worker of one's own needs; never a token.

    The tokens stay in their 0600 file, which this names: output ends up in terminals'
    scrollback, CI logs and bug reports.
    """
    lines = [
        f"Temporal:    {state.temporal_address} (namespace {state.temporal_namespace})",
        f"Web UI:      {state.ui_url}",
        f"Kubernetes:  {state.kubernetes_server}",
        *([f"Prometheus:  {state.prometheus_address}"
           + (f"  (simulated mesh: {state.mesh_metrics_url})" if state.mesh_metrics_url else "")]
          if state.prometheus_address else []),
        f"Worker:      {'pid ' + str(state.processes['worker']) if 'worker' in state.processes else 'none'}"
        + (f" (log {state.worker_log})" if state.worker_log else ""),
        *([f"API + page:  {state.api_url}  (OpenAPI: {state.api_url}/docs)",
           f"API tokens:  {state.api_tokens_file}  (one per role; sign in with the admin one)"]
          if state.api_url else []),
        f"State dir:   {state.state_dir}",
        "",
        f"export TEMPORAL_ADDRESS={state.temporal_address}",
        *([f"export TEMPORAL_HTTP_ADDRESS={state.temporal_http_address}"] if state.temporal_http_address else []),
        f"export KUBECONFIG={state.kubeconfig}",
        *([f"export CANARY_PROMETHEUS_ADDRESS={state.prometheus_address}"] if state.prometheus_address else []),
    ]
    _out("\n".join(lines))


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir).expanduser().resolve()


def cmd_up(args: argparse.Namespace) -> int:
    """Start the environment in the background, or report the one already running."""
    state_dir = _state_dir(args)
    running = supervisor_pid(state_dir)
    if running is not None:
        state = read_state(state_dir)
        if state is None:
            raise DevError(f"a dev environment is starting in {state_dir} (supervisor pid {running}); "
                           "wait for it or run `canaryctl dev down`")
        _out(f"dev environment already running (supervisor pid {running})")
        print_state(state)
        return 0
    control.shut_down(state_dir)  # leftovers of a supervisor that was killed
    worker = None if args.no_worker else (Path(args.worker) if args.worker else default_worker_script())
    if worker is not None and not worker.is_file():
        raise DevError(f"worker script {worker} not found")
    api_port = None if args.no_api else args.api_port
    for flag, port in (("--port", args.port), ("--ui-port", args.ui_port), ("--api-port", api_port)):
        if port is not None and port_in_use(port):
            raise DevError(f"port {port} is already in use (another Temporal server?); choose {flag}")
    options = Options(state_dir=state_dir, port=args.port, ui_port=args.ui_port, nodes=args.nodes,
                      worker_script=worker.resolve() if worker else None,
                      cluster_home=Path(args.cluster_home) if args.cluster_home else None, api_port=api_port)
    process = control.launch(options)
    print(f"starting the dev environment (log: {state_dir / LOG_FILE}) ...", file=sys.stderr, flush=True)
    try:
        state = control.wait_until_ready(process, state_dir, args.timeout)
    except KeyboardInterrupt:
        control.stop_process(process)
        raise
    print_state(state)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """Stop everything; the cluster's objects and Temporal's jobs stay for the next ``dev up``."""
    state_dir = _state_dir(args)
    if control.shut_down(state_dir):
        _out(f"dev environment in {state_dir} stopped")
    else:
        _out(f"no dev environment running in {state_dir}")
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    """Stop the environment if it runs and delete the cluster's state and Temporal's database."""
    state_dir = _state_dir(args)
    deleted = control.reset(state_dir)
    what = ", ".join(path.name for path in deleted) or "nothing to delete"
    _out(f"dev environment in {state_dir} reset ({what}); the next `canaryctl dev up` starts from scratch")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Addresses and whether each process still runs; exit status 1 unless all of them do."""
    state_dir = _state_dir(args)
    pid = supervisor_pid(state_dir)
    state = read_state(state_dir)
    if state is None or pid is None:
        message = (f"dev environment starting in {state_dir} (supervisor pid {pid})" if pid
                   else f"no dev environment running in {state_dir}")
        if args.output == "json":
            message = json.dumps({"running": False, "starting": pid is not None})
        _out(message)
        return 1
    alive = {name: owned(child, state.owner_marker(name)) for name, child in state.processes.items()}
    if args.output == "json":
        _out(json.dumps({"running": True, **state.model_dump(mode="json"), "alive": alive}, indent=2))
    else:
        print_state(state)
        _out("")
        _out(f"{'supervisor':<24} pid {pid}  running")
        for name, child in state.processes.items():
            _out(f"{name:<24} pid {child}  {'running' if alive[name] else 'GONE'}")
    return 0 if all(alive.values()) else 1


def register(sub: Any) -> argparse.ArgumentParser:
    """Add ``dev`` and its sub-commands to ``sub`` (an ``add_subparsers()`` result); each sets ``func``."""
    dev_parser: argparse.ArgumentParser = sub.add_parser(
        "dev", help="run Temporal, a local Kubernetes cluster, Prometheus and a worker",
        description="The local development environment.")
    dev_sub = dev_parser.add_subparsers(dest="dev_command", required=True, metavar="COMMAND")
    up = dev_sub.add_parser("up", help="start everything in the background")
    up.add_argument("--port", type=int, default=DEFAULT_PORT,
                    help="Temporal gRPC port (default %(default)s)")
    up.add_argument("--ui-port", type=int, default=DEFAULT_UI_PORT,
                    help="web UI port (default %(default)s)")
    up.add_argument("--nodes", type=int, default=3, help="simulated Kubernetes nodes")
    worker = up.add_mutually_exclusive_group()
    worker.add_argument("--no-worker", action="store_true", help="start no worker (run your own)")
    worker.add_argument("--worker", metavar="PATH", help="worker script (default: the project's worker.py)")
    up.add_argument("--cluster-home", help="where scripts/build-cluster.sh put the cluster binaries")
    http_api = up.add_mutually_exclusive_group()
    http_api.add_argument("--api-port", type=int, default=DEFAULT_API_PORT,
                          help="port of the HTTP API and web page (default %(default)s)")
    http_api.add_argument("--no-api", action="store_true", help="start no HTTP API and web page")
    up.add_argument("--timeout", type=float, default=300.0, help="seconds to wait until ready")
    up.set_defaults(func=cmd_up)
    down = dev_sub.add_parser("down", help="stop worker, Prometheus, cluster and Temporal (their data stays)")
    down.set_defaults(func=cmd_down)
    status = dev_sub.add_parser("status", help="show addresses and processes")
    status.add_argument("-o", "--output", choices=["text", "json"], default="text")
    status.set_defaults(func=cmd_status)
    reset = dev_sub.add_parser(
        "reset", help="stop, then delete the cluster's state and Temporal's database (API tokens stay)")
    reset.set_defaults(func=cmd_reset)
    for p in (up, down, status, reset):
        p.add_argument("--state-dir", default=str(DEFAULT_HOME),
                       help="state directory (default: $CANARY_DEV_HOME or %(default)s)")
    return dev_parser


def build_parser() -> argparse.ArgumentParser:
    """``python -m devenv.cli``: the ``dev`` sub-commands on their own."""
    parser = argparse.ArgumentParser(prog="python -m devenv.cli", description="The local development environment.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``dev <command>``; a failure is one ``error: ...`` line and status 1."""
    args = build_parser().parse_args(["dev", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args))
    except DevError as err:
        lines = str(err).splitlines() or ["failed"]
        print(f"error: {lines[0]}", file=sys.stderr)
        for line in lines[1:]:
            print(f"  {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
