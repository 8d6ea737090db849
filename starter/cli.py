"""``canaryctl``: create, watch and steer canary delivery jobs, and run the local dev environment.

Every command that changes a job sends a Temporal update (see :mod:`starter.client`), so the
user learns at once whether it was accepted. Whatever goes wrong ends as one line
``error: ...`` on stderr and a non-zero exit status, never a traceback: 2 for a bad command
line or job file, 1 for everything else, 130 for Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import math
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from temporalio.client import Client

from devenv import cli as dev_cli
from starter import client as canary
from starter import lifecycle, render
from starter.actors import actor_problem
from starter.errors import CanaryError, Conflict
from workflows import names
from workflows.models import (
    JobDetails,
    OperationRequest,
    OperationResult,
    Phase,
    RollbackRequest,
    UpdateRulesRequest,
    UpdateVersionRequest,
)
from workflows.spec import DeliveryRules, JobSpec, field_path

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
DEFAULT_NAMESPACE = "default"
# Phases in which nothing moves by itself: ``get --watch`` stops there.
IDLE_PHASES = {Phase.HEALTHY, Phase.FAILED, Phase.TERMINATED, Phase.DELETED}


class SpecError(CanaryError):
    """A job or rules file that cannot be read or does not validate; one line per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


# -- input files --------------------------------------------------------------------------------


def load_document(path: str) -> Any:
    """Read one YAML or JSON document from a file, or stdin for ``-``.

    A document that parses as JSON is read as JSON, so it means what the same body means to the
    HTTP API: YAML 1.1 reads a JSON number such as ``1e400`` as a string, JSON as infinity, and
    the two would be refused with different messages.
    """
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except FileNotFoundError:
        raise SpecError([f"{path}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError([f"{path}: cannot read: {getattr(err, 'strerror', None) or err}"]) from None
    if text.lstrip().startswith(("{", "[")):
        try:
            return json.loads(text)
        except ValueError:
            pass  # YAML's flow style looks the same; YAML reads it (or says where it is wrong)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = ""
        mark = getattr(err, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError([f"{path}: not valid YAML or JSON: {problem}{where}"]) from None


def validation_lines(err: ValidationError) -> list[str]:
    """``<field path>: <reason>`` for each problem pydantic found."""
    lines = []
    for problem in err.errors():
        message = str(problem["msg"]).removeprefix("Value error, ")
        path = field_path(problem["loc"])
        lines.append(f"{path}: {message}" if path else message)
    return lines


def load_job(path: str, namespace: str | None) -> JobSpec:
    """The job in ``path``, validated; ``-n`` fills in (or must agree with) its namespace."""
    document = load_document(path)
    if not isinstance(document, dict):
        raise SpecError([f"{path}: a job must be a mapping with name, workload and steps"])
    if namespace is not None:
        written = document.setdefault("namespace", namespace)
        if written != namespace:
            raise SpecError([f"{path} says namespace {written!r} but -n says {namespace!r}"])
    try:
        return JobSpec.model_validate(document)
    except ValidationError as err:
        raise SpecError(validation_lines(err)) from None


def load_rules(path: str) -> DeliveryRules:
    """Rules from a rules file, or the rules part of a whole job file."""
    document = load_document(path)
    if not isinstance(document, dict):
        raise SpecError([f"{path}: rules must be a mapping with steps"])
    try:
        if "workload" in document or "name" in document:
            return JobSpec.model_validate(document).rules
        return DeliveryRules.model_validate(document)
    except ValidationError as err:
        raise SpecError(validation_lines(err)) from None


# -- output ---------------------------------------------------------------------------------


def _out(text: str) -> None:
    print(text, flush=True)


def _json(model: BaseModel | list[Any], *, indent: int | None = 2) -> str:
    if isinstance(model, BaseModel):
        return model.model_dump_json(indent=indent, by_alias=True)
    return json.dumps([m.model_dump(mode="json", by_alias=True) for m in model], indent=indent)


def _color() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _now() -> datetime:
    return datetime.now(UTC)


class ActorError(SpecError):
    """``$CANARY_ACTOR`` (or the OS user name) cannot be recorded: a usage error naming the field."""


def os_user() -> str:
    """The OS user running ``canaryctl``: what the job records unless told more.

    From the password database by user id where there is one: ``getpass.getuser()`` reads
    ``$LOGNAME``/``$USER`` first, which are as easy to set as ``$CANARY_ACTOR``.
    """
    try:
        import pwd  # POSIX only

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError, OSError):
        pass
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def actor(environ: Mapping[str, str] | None = None) -> str:
    """Who is operating, as recorded in the job's history: the OS user.

    ``$CANARY_ACTOR`` (a CI pipeline naming itself) is a claim anybody can make, so it never
    replaces the OS user: it is recorded beside it, ``ci-deploy (os user runner)``. Either is
    refused (exit 2, naming ``actor``) if it holds markup or control characters.
    """
    environ = os.environ if environ is None else environ
    user = os_user()
    claimed = environ.get("CANARY_ACTOR", "").strip()
    name = user if not claimed or claimed == user else f"{claimed} (os user {user})"
    problem = actor_problem(claimed or user) or actor_problem(name)
    if problem is not None:
        source = "$CANARY_ACTOR" if claimed else "the OS user name"
        raise ActorError([f"actor: {problem} ({source})"])
    return name


def _request(args: argparse.Namespace) -> dict[str, Any]:
    # A fresh request id per command: the workflow ignores a repeat of the same request.
    # ``release``/``step`` (continue, promote) name the gate meant; without them the client
    # sends the ones the job shows now.
    return {"actor": actor(), "requestId": uuid.uuid4().hex, "reason": getattr(args, "reason", None),
            "release": getattr(args, "release", None), "step": getattr(args, "step", None)}


# -- job commands ---------------------------------------------------------------------------


def _ns(args: argparse.Namespace) -> str:
    return str(args.namespace or DEFAULT_NAMESPACE)


async def _connect(args: argparse.Namespace) -> Client:
    return await canary.connect(args.address, args.temporal_namespace)


async def _cmd_apply(args: argparse.Namespace) -> int:
    spec = load_job(args.filename, args.namespace)
    client = await _connect(args)
    applied = await canary.apply_job(client, spec, actor=actor(), request_id=uuid.uuid4().hex)
    _out(applied.message)
    return 0


async def _cmd_list(args: argparse.Namespace) -> int:
    client = await _connect(args)
    jobs = await canary.list_jobs(client, args.namespace, args.phase, include_closed=args.all)
    _out(_json(jobs) if args.output == "json" else render.render_jobs(jobs, _now()))
    return 0


async def _cmd_get(args: argparse.Namespace) -> int:
    client = await _connect(args)
    first = True
    while True:
        job: JobDetails = await canary.details(client, _ns(args), args.job)
        if args.output == "json":
            _out(_json(job, indent=None if args.watch else 2))
        else:
            frame = render.render_details(job, _now(), color=_color())
            if args.watch and sys.stdout.isatty():
                sys.stdout.write("\x1b[H\x1b[2J")
            elif args.watch and not first:
                _out("")
            _out(frame)
        first = False
        if not args.watch or job.phase in IDLE_PHASES:
            return 0
        await asyncio.sleep(1)


async def _cmd_history(args: argparse.Namespace) -> int:
    client = await _connect(args)
    result = await canary.versions(client, _ns(args), args.job)
    _out(_json(result) if args.output == "json" else render.render_versions(result))
    return 0


async def _operate(args: argparse.Namespace, operation: str, request: OperationRequest) -> int:
    client = await _connect(args)
    try:
        result: OperationResult = await canary.operate(client, _ns(args), args.job, operation, request,
                                                       timeout=args.timeout)
    except Conflict as err:
        if request.release is None and request.step is None:
            raise
        # The job refused the release/step the user named: say which, and where to look.
        raise Conflict(f"{err.message} (sent release {request.release or '-'}, step {request.step or '-'}; "
                       f"`canaryctl get {args.job} -n {_ns(args)}` shows the current ones)") from None
    _out(f"{_ns(args)}/{args.job}: {result.message} (phase {result.phase.value})")
    return 0


async def _cmd_set_image(args: argparse.Namespace) -> int:
    request = UpdateVersionRequest.model_validate(
        {**_request(args), "image": args.image, "container": args.container})
    return await _operate(args, names.UPDATE_VERSION, request)


async def _cmd_update_rules(args: argparse.Namespace) -> int:
    rules = load_rules(args.filename)
    request = UpdateRulesRequest.model_validate(
        {**_request(args), "rules": rules.model_dump(mode="json", by_alias=True)})
    return await _operate(args, names.UPDATE_RULES, request)


async def _cmd_rollback(args: argparse.Namespace) -> int:
    request = RollbackRequest.model_validate(
        {**_request(args), "revision": args.to_revision, "skipSteps": args.skip_steps})
    return await _operate(args, names.ROLLBACK, request)


def _simple(operation: str) -> Callable[[argparse.Namespace], Awaitable[int]]:
    async def command(args: argparse.Namespace) -> int:
        return await _operate(args, operation, OperationRequest.model_validate(_request(args)))

    return command


# -- parser ---------------------------------------------------------------------------------

MAX_TIMEOUT = 3600.0


def timeout_seconds(value: str) -> float:
    """``--timeout``: a positive, finite number of seconds (at most an hour).

    A negative or zero wait would give up before the job could answer, and ``inf``/``nan``
    would reach the Temporal client as a deadline it cannot represent.
    """
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most {MAX_TIMEOUT:.0f} seconds, "
                                         f"not {value}")
    return seconds


def _connection_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    # Accepted before and after the subcommand; after it, only an explicit value overrides.
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--address", default=default(None),
                        help="Temporal frontend host:port (default: $TEMPORAL_ADDRESS or 127.0.0.1:7233)")
    parser.add_argument("-n", "--namespace", default=default(None),
                        help="Kubernetes namespace of the job (default: default; list: all)")
    parser.add_argument("--temporal-namespace", default=default(None),
                        help="Temporal namespace (default: $TEMPORAL_NAMESPACE or default)")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; each subcommand sets ``func``."""
    parser = argparse.ArgumentParser(prog="canaryctl", description="Progressive delivery for Kubernetes "
                                     "Deployments: every canary job is a durable Temporal workflow.")
    _connection_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _connection_options(common, suppress=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, func: Callable[..., Any], help_text: str, job: bool = True
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        if job:
            p.add_argument("job", metavar="JOB", help="name of the canary job")
        p.set_defaults(func=func)
        return p

    p = command("apply", _cmd_apply, "create a job from a YAML/JSON file, or update a running job's rules",
                job=False)
    p.add_argument("-f", "--filename", required=True, help="job file (YAML or JSON; - for stdin)")
    p = command("list", _cmd_list, "list jobs (all namespaces unless -n is given)", job=False)
    p.add_argument("--phase", choices=[phase.value for phase in Phase])
    p.add_argument("--all", action="store_true", help="include jobs that have ended")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p = command("get", _cmd_get, "show a job: phase, steps, weight, versions")
    p.add_argument("-w", "--watch", action="store_true", help="redraw every second until the job is idle")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p = command("history", _cmd_history, "show the versions the job has delivered")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")

    def operation(name: str, func: Callable[..., Any], help_text: str) -> argparse.ArgumentParser:
        p = command(name, func, help_text)
        p.add_argument("--timeout", type=timeout_seconds, default=canary.UPDATE_TIMEOUT,
                       help="seconds to wait for the job to answer (default: %(default).0f)")
        return p

    p = operation("set-image", _cmd_set_image, "deliver a new image (starts a canary release)")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("-c", "--container",
                   help="container to change; required when the pod has several ('*': all of them)")
    p = operation("update-rules", _cmd_update_rules, "replace the job's steps and traffic policy")
    p.add_argument("-f", "--filename", required=True, help="rules file, or a whole job file")
    for name, help_text in ((names.CONTINUE, "end the current pause"),
                            (names.PROMOTE, "skip the remaining steps and promote the canary")):
        p = operation(name, _simple(name), help_text + " (of the release and step shown now, unless named)")
        p.add_argument("--release", type=int, metavar="N",
                       help="the release (canary revision) meant; refused if no longer current")
        p.add_argument("--step", type=int, metavar="N",
                       help="the step (1-based, as `get` shows it) meant; refused if no longer current")
    p = operation("terminate", _simple(names.TERMINATE), "abort the release and return to stable")
    p.add_argument("--reason", help="why (kept in the job's history)")
    p = operation("rollback", _cmd_rollback, "deliver an earlier revision again")
    p.add_argument("--to-revision", type=int, required=True, metavar="N")
    p.add_argument("--skip-steps", action="store_true", help="roll out at once instead of step by step")
    operation("delete", _simple(names.DELETE), "give the Deployment back and end the job")

    dev_cli.register(sub)  # ``canaryctl dev ...``: the dev environment lives in devenv
    return parser


def _error(message: str) -> None:
    # One line says what went wrong; any context (a log tail) follows indented.
    lines = message.splitlines() or ["failed"]
    print(f"error: {lines[0]}", file=sys.stderr)
    for line in lines[1:]:
        print(f"  {line}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``canaryctl`` (and ``kubectl-canary``); returns the exit status.

    Every command closes what it opened before it returns, and :func:`lifecycle.settle` lets
    the Temporal SDK's Rust threads leave the interpreter before it finalizes: without that,
    about one run in two of a short command died at exit with "Fatal Python error:
    PyGILState_Release" (exit 134) after doing its work (see :mod:`starter.lifecycle`).
    """
    status = run(argv)
    lifecycle.settle()
    return status


def run(argv: list[str] | None = None) -> int:
    """Parse the command line and run the command; every failure becomes ``error: ...``."""
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
        if asyncio.iscoroutine(result):
            result = lifecycle.run(result)
        return int(result)
    except (Exception, KeyboardInterrupt) as err:
        return _failure(err, args)


def _failure(err: BaseException, args: argparse.Namespace) -> int:
    """Report ``err`` on one line (or several, one per bad field) and give the exit code."""
    if isinstance(err, SpecError | ValidationError):
        # A bad job file, or an argument the request model refuses (e.g. --to-revision 0).
        for line in err.lines if isinstance(err, SpecError) else validation_lines(err):
            print(f"error: {line}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(err, CanaryError | dev_cli.DevError):
        _error(err.message if isinstance(err, CanaryError) else str(err))
        return EXIT_ERROR
    if isinstance(err, KeyboardInterrupt):
        if getattr(args, "watch", False):
            return 0
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if isinstance(err, BrokenPipeError):
        # `canaryctl list | head`: the reader left; say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    # A bug or an unforeseen server answer: still one line, unless debugging.
    if os.environ.get("CANARY_DEBUG"):
        raise err
    _error(f"{type(err).__name__}: {err} (set CANARY_DEBUG=1 for a traceback)")
    return EXIT_ERROR

if __name__ == "__main__":
    sys.exit(main())
