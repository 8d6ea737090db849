"""``canaryctl``: create, watch and steer canary delivery jobs, and run the local dev environment.

Every command that changes a job sends a Temporal update (see :mod:`starter.client`), so the
user learns at once whether it was accepted. Whatever goes wrong ends as one line
``error: ...`` on stderr and a non-zero exit status, never a traceback: 2 for a bad command
line or job file, 1 for everything else, 130 for Ctrl-C. ``status`` and ``--wait`` answer a
pipeline: 0 delivered, 1 failed (or refused), 2 timed out or unreachable.

Start-up is part of the interface (a pipeline calls it many times): this module imports only
the standard library at start, and each command imports what it needs (pydantic, the Temporal
SDK, ``devenv``) when it runs, so ``--help`` and ``lint`` never load the Temporal client.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from starter import connection
from starter.actors import actor_problem
from starter.errors import CanaryError, Conflict, Unavailable
from workflows import names
from workflows.phases import Phase

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError
    from temporalio.client import Client

    from starter.follow import Target, Verdict
    from workflows.models import JobDetails, OperationRequest
    from workflows.spec import DeliveryRules, JobSpec

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
EXIT_TIMEOUT = 2  # status / --wait: the release did not end in time, or the job was unreachable
DEFAULT_NAMESPACE = "default"
# Phases in which nothing moves by itself: ``get --watch`` stops there.
IDLE_PHASES = {Phase.HEALTHY, Phase.FAILED, Phase.TERMINATED, Phase.DELETED}
# How long an operation waits for the job's answer (starter.client.UPDATE_TIMEOUT, kept here so
# that parsing the command line does not load the Temporal SDK).
ANSWER_TIMEOUT = 60.0
DEFAULT_WAIT = "10m"
T = TypeVar("T")


class SpecError(CanaryError):
    """A job or rules file that cannot be read or does not validate; one line per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


# -- input files --------------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text()
    except FileNotFoundError:
        raise SpecError([f"{path}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError([f"{path}: cannot read: {getattr(err, 'strerror', None) or err}"]) from None


def _yaml_error(path: str, err: Exception) -> SpecError:
    where = ""
    mark = getattr(err, "problem_mark", None)
    if mark is not None:
        where = f" at line {mark.line + 1}, column {mark.column + 1}"
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return SpecError([f"{path}: not valid YAML or JSON: {problem}{where}"])


def load_document(path: str) -> Any:
    """Read one YAML or JSON document from a file, or stdin for ``-``.

    A document that parses as JSON is read as JSON, so it means what the same body means to the
    HTTP API: YAML 1.1 reads a JSON number such as ``1e400`` as a string, JSON as infinity, and
    the two would be refused with different messages.
    """
    import yaml

    text = _read(path)
    if text.lstrip().startswith(("{", "[")):
        try:
            return json.loads(text)
        except ValueError:
            pass  # YAML's flow style looks the same; YAML reads it (or says where it is wrong)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise _yaml_error(path, err) from None


def load_documents(path: str) -> list[Any]:
    """Every document of a file (``---`` between them), for ``lint`` and ``convert``; empty ones skipped."""
    import yaml

    text = _read(path)
    if text.lstrip().startswith(("{", "[")):
        try:
            return [json.loads(text)]
        except ValueError:
            pass
    try:
        return [document for document in yaml.safe_load_all(text) if document is not None]
    except yaml.YAMLError as err:
        raise _yaml_error(path, err) from None


def validation_lines(err: ValidationError) -> list[str]:
    """``<field path>: <reason>`` for each problem pydantic found."""
    from workflows.spec import field_path

    lines = []
    for problem in err.errors():
        message = str(problem["msg"]).removeprefix("Value error, ")
        path = field_path(problem["loc"])
        lines.append(f"{path}: {message}" if path else message)
    return lines


def validate_job(document: Any, namespace: str | None, source: str) -> JobSpec:
    """``document`` as a job, exactly as ``apply`` reads it: what ``lint`` checks too."""
    from pydantic import ValidationError

    from workflows.spec import JobSpec

    if not isinstance(document, dict):
        raise SpecError([f"{source}: a job must be a mapping with name, workload and steps"])
    if namespace is not None:
        written = document.setdefault("namespace", namespace)
        if written != namespace:
            raise SpecError([f"{source} says namespace {written!r} but -n says {namespace!r}"])
    try:
        return JobSpec.model_validate(document)
    except ValidationError as err:
        raise SpecError(validation_lines(err)) from None


def load_job(path: str, namespace: str | None) -> JobSpec:
    """The job in ``path``, validated; ``-n`` fills in (or must agree with) its namespace."""
    return validate_job(load_document(path), namespace, path)


def load_rules(path: str) -> DeliveryRules:
    """Rules from a rules file, or the rules part of a whole job file."""
    from pydantic import ValidationError

    from workflows.spec import DeliveryRules, JobSpec

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


def _plain(model: Any) -> Any:
    """A model (or list of them, or plain data) as JSON-ready data under the wire's field names."""
    if isinstance(model, list):
        return [_plain(item) for item in model]
    if hasattr(model, "model_dump"):
        return model.model_dump(mode="json", by_alias=True)
    return model


def _json(model: BaseModel | list[Any], *, indent: int | None = 2) -> str:
    if hasattr(model, "model_dump_json"):
        return str(model.model_dump_json(indent=indent, by_alias=True))
    return json.dumps(_plain(model), indent=indent)


def _yaml(model: Any) -> str:
    import yaml

    return str(yaml.safe_dump(_plain(model), sort_keys=False, allow_unicode=True)).rstrip("\n")


def _formatted(model: Any, output: str, *, stream: bool = False) -> str:
    """``-o json`` (one line per answer when ``stream``) or ``-o yaml`` (``---`` before each when ``stream``)."""
    if output == "yaml":
        return ("---\n" if stream else "") + _yaml(model)
    return _json(model, indent=None if stream else 2)


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
    import getpass

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
    import uuid

    # A fresh request id per command: the workflow ignores a repeat of the same request.
    # ``release``/``step`` (continue, promote) name the gate meant; without them the client
    # sends the ones the job shows now.
    return {"actor": actor(), "requestId": uuid.uuid4().hex, "reason": getattr(args, "reason", None),
            "release": getattr(args, "release", None), "step": getattr(args, "step", None)}


# -- offline commands -----------------------------------------------------------------------


def _cmd_lint(args: argparse.Namespace) -> int:
    """Every problem of every job in the file, with its field path; exit 1 on any."""
    documents = load_documents(args.filename)
    if not documents:
        raise SpecError([f"{args.filename}: no job in the file"])
    problems = 0
    for number, document in enumerate(documents, start=1):
        where = args.filename if len(documents) == 1 else f"{args.filename} (document {number})"
        try:
            job = validate_job(document, args.namespace, where)
        except SpecError as err:
            problems += len(err.lines)
            for line in err.lines:
                _out(f"{where}: {line}")
        else:
            steps = f"{len(job.steps)} step" + ("s" if len(job.steps) != 1 else "")
            if job.blue_green is not None:
                steps = f"blue-green via Service {job.blue_green.active_service}"
            _out(f"{where}: ok: canary job {job.namespace}/{job.name}, {steps}, Deployment {job.workload.name}")
    if problems:
        print(f"error: {problems} problem{'s' if problems > 1 else ''} in {args.filename}", file=sys.stderr)
        return EXIT_ERROR
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    """The Argo Rollout as a job (stdout), a note per field that has no counterpart (stderr)."""
    from starter.argo import ConvertError, convert

    try:
        conversion = convert(load_documents(args.filename), namespace=args.namespace)
    except ConvertError as err:
        raise SpecError([f"{args.filename}: {err}"]) from None
    for note in conversion.notes:
        print(f"note: {note}", file=sys.stderr)
    job = validate_job(dict(conversion.job), None, args.filename)  # what apply would say, now
    del job
    _out(_formatted(conversion.job, args.output))
    return 0


# -- job commands ---------------------------------------------------------------------------


def _ns(args: argparse.Namespace) -> str:
    return str(args.namespace or DEFAULT_NAMESPACE)


async def _connect(args: argparse.Namespace) -> Client:
    from starter import client as canary

    return await canary.connect(overrides=connection.overrides_from_args(args))


async def _cmd_apply(args: argparse.Namespace) -> int:
    import uuid

    from starter import client as canary

    spec = load_job(args.filename, args.namespace)
    client = await _connect(args)
    applied = await canary.apply_job(client, spec, actor=actor(), request_id=uuid.uuid4().hex)
    _out(applied.message)
    if not args.wait:
        return 0
    from starter.follow import Target

    # A new job has attached (apply waited for it); a configured one may be mid-release.
    return await _wait(args, client, spec.namespace, spec.name, Target())


async def _cmd_list(args: argparse.Namespace) -> int:
    from starter import client as canary
    from starter import render

    client = await _connect(args)
    jobs = await canary.list_jobs(client, args.namespace, args.phase, include_closed=args.all)
    _out(_formatted(jobs, args.output) if args.output != "text" else render.render_jobs(jobs, _now()))
    return 0


async def _cmd_get(args: argparse.Namespace) -> int:
    import asyncio

    from starter import client as canary
    from starter import render

    client = await _connect(args)
    first = True
    while True:
        job: JobDetails = await canary.details(client, _ns(args), args.job)
        if args.output != "text":
            _out(_formatted(job, args.output, stream=args.watch))
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
    from starter import client as canary
    from starter import render

    client = await _connect(args)
    result = await canary.versions(client, _ns(args), args.job)
    _out(_formatted(result, args.output) if args.output != "text" else render.render_versions(result))
    return 0


async def _cmd_status(args: argparse.Namespace) -> int:
    from starter.follow import Target

    try:
        client = await _connect(args)
    except Unavailable as err:
        return _unreachable(args, err)
    return await _wait(args, client, _ns(args), args.job, Target())


def _unreachable(args: argparse.Namespace, err: CanaryError) -> int:
    _error(err.message)
    return EXIT_TIMEOUT


async def _wait(args: argparse.Namespace, client: Client, namespace: str, name: str, target: Target,
                *, spent: float = 0.0) -> int:
    """Follow the release to its end: progress on stdout (stderr with ``-o``), then the verdict."""
    from starter.follow import follow
    from starter.progress import ProgressReporter

    structured = getattr(args, "output", "text") not in ("text", None)
    stream = sys.stderr if structured else sys.stdout
    reporter = ProgressReporter(stream, live=stream.isatty() and not os.environ.get("CI"))
    last: list[JobDetails] = []

    def report(details: JobDetails) -> None:
        last[:] = [details]
        reporter(details)

    try:
        verdict: Verdict = await follow(client, namespace, name, target, report=report,
                                        timeout=max(1.0, args.wait_timeout - spent))
    finally:
        reporter.close()
    if structured:
        _out(_formatted({"job": f"{namespace}/{name}", "exitStatus": verdict.status, "message": verdict.message,
                         "details": _plain(last[0]) if last else None}, args.output))
    if verdict.status == 0:
        print(verdict.message, file=stream, flush=True)
    else:
        _error(verdict.message)
    return verdict.status


# Request fields the models bound (workflows.models): checked here so that the HTTP path needs no
# pydantic; anything outside them is validated by the model, which says what is wrong exactly as before.
_MAX_LENGTHS = {"requestId": 128, "actor": 256, "reason": 1024, "image": 512}
_POSITIVE = ("release", "step", "revision")
# The request model of each operation, by name (workflows.models), loaded only on the SDK path.
_MODELS = {names.UPDATE_VERSION: "UpdateVersionRequest", names.ROLLBACK: "RollbackRequest",
           names.UPDATE_RULES: "UpdateRulesRequest"}


def _plainly_valid(body: Mapping[str, Any]) -> bool:
    """Whether the request model would take ``body`` as it is (a sure yes, or "ask the model")."""
    for key, value in body.items():
        if isinstance(value, str):
            try:
                value.encode()
            except UnicodeEncodeError:
                return False
            if len(value) > _MAX_LENGTHS.get(key, len(value)) or (key == "image" and not value):
                return False
        elif key in _POSITIVE and value is not None and (type(value) is not int or value < 1):
            return False
    return "image" not in body or isinstance(body["image"], str)


def _operate(args: argparse.Namespace, operation: str, body: dict[str, Any]) -> int | Awaitable[int]:
    """Run the operation over Temporal's HTTP API when one is named and can; else through the SDK.

    The HTTP path answers without loading the Temporal SDK or pydantic (start-up is most of
    what a pipeline's call costs). It steps aside, before it changed anything, whenever it
    could not do exactly what the SDK path does; ``--wait`` follows the release through the SDK.
    """
    address = _http_address(args)
    if address is not None and not getattr(args, "wait", False) and _plainly_valid(body):
        from starter import http_ops
        from starter.temporal_http import Unsupported

        try:
            endpoint = http_ops.endpoint(address, connection.overrides_from_args(args))
            result = _sent_gate(args, body, lambda: http_ops.operate(
                endpoint, _ns(args), args.job, operation, body, timeout=args.answer_timeout))
        except Unsupported as err:
            http_ops.debug(str(err))
        else:
            _out(f"{_ns(args)}/{args.job}: {result['message']} (phase {result['phase']})")
            return 0
    return _operate_sdk(args, operation, body)


def _http_address(args: argparse.Namespace) -> str | None:
    from starter.temporal_http import configured_address

    return configured_address(getattr(args, "http_address", None))


def _sent_gate(args: argparse.Namespace, body: Mapping[str, Any], call: Callable[[], T]) -> T:
    """``call()``; a refusal of the release/step the user named says which, and where to look."""
    try:
        return call()
    except Conflict as err:
        if body.get("release") is None and body.get("step") is None:
            raise
        raise _gate_refused(args, err, body.get("release"), body.get("step")) from None


def _gate_refused(args: argparse.Namespace, err: Conflict, release: int | None, step: int | None) -> Conflict:
    """The job refused the release/step the user named: say which, and where to look."""
    return Conflict(f"{err.message} (sent release {release or '-'}, step {step or '-'}; "
                    f"`canaryctl get {args.job} -n {_ns(args)}` shows the current ones)")


async def _operate_sdk(args: argparse.Namespace, operation: str, body: dict[str, Any]) -> int:
    from workflows import models

    request: OperationRequest = getattr(models, _MODELS.get(operation, "OperationRequest")).model_validate(body)
    if not getattr(args, "wait", False):
        return await _operate_once(args, operation, request)
    try:
        return await _operate_once(args, operation, request)
    except Unavailable as err:  # a pipeline tells "cannot reach" (2) from "refused" (1)
        return _unreachable(args, err)


async def _operate_once(args: argparse.Namespace, operation: str, request: OperationRequest) -> int:
    import time

    from starter import client as canary

    started = time.monotonic()
    client = await _connect(args)
    wait = getattr(args, "wait", False)  # terminate, update-rules and delete have no --wait
    target = await _wait_target(client, _ns(args), args.job, operation) if wait else None
    try:
        result = await canary.operate(client, _ns(args), args.job, operation, request, timeout=args.answer_timeout)
    except Conflict as err:
        if request.release is None and request.step is None:
            raise
        raise _gate_refused(args, err, request.release, request.step) from None
    _out(f"{_ns(args)}/{args.job}: {result.message} (phase {result.phase.value})")
    if target is None:
        return 0
    return await _wait(args, client, _ns(args), args.job, target, spent=time.monotonic() - started)


async def _wait_target(client: Client, namespace: str, name: str, operation: str) -> Target:
    """What ``--wait`` follows: the release the operation starts, or the one it acts on."""
    from starter import client as canary
    from starter.follow import Target, newest_revision

    before = await canary.details(client, namespace, name)
    if operation in (names.UPDATE_VERSION, names.ROLLBACK):
        return Target(after=newest_revision(before))
    return Target(release=before.canary.revision if before.canary else None)


def _cmd_set_image(args: argparse.Namespace) -> int | Awaitable[int]:
    return _operate(args, names.UPDATE_VERSION, {**_request(args), "image": args.image, "container": args.container})


def _cmd_update_rules(args: argparse.Namespace) -> int | Awaitable[int]:
    rules = load_rules(args.filename)
    return _operate(args, names.UPDATE_RULES, {**_request(args), "rules": rules.model_dump(mode="json", by_alias=True)})


def _cmd_rollback(args: argparse.Namespace) -> int | Awaitable[int]:
    return _operate(args, names.ROLLBACK,
                    {**_request(args), "revision": args.to_revision, "skipSteps": args.skip_steps})


def _simple(operation: str) -> Callable[[argparse.Namespace], int | Awaitable[int]]:
    def command(args: argparse.Namespace) -> int | Awaitable[int]:
        return _operate(args, operation, _request(args))

    return command


# -- parser ---------------------------------------------------------------------------------

MAX_TIMEOUT = 3600.0
# --wait and status follow a whole release, pauses included.
MAX_WAIT = 7 * 86400.0
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def timeout_seconds(value: str) -> float:
    """``--timeout``: a positive, finite number of seconds or a duration (``90s``, ``10m``, ``1h``).

    A negative or zero wait would give up before the job could answer, and ``inf``/``nan``
    would reach the Temporal client as a deadline it cannot represent. The upper bound is
    checked once it is known whether the command waits for the whole release (:data:`MAX_WAIT`)
    or only for an answer (:data:`MAX_TIMEOUT`).
    """
    match = re.fullmatch(r"\s*([0-9.]+)\s*([smhd])\s*", value)
    try:
        seconds = float(match.group(1)) * _UNITS[match.group(2)] if match else float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds or a duration such as 10m") from None
    if not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_WAIT:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most {MAX_TIMEOUT:.0f} seconds "
                                         f"(7d with --wait or status), not {value}")
    return seconds


def _connection_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    # Accepted before and after the subcommand; after it, only an explicit value overrides.
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("-n", "--namespace", default=default(None),
                        help="Kubernetes namespace of the job (default: default; list: all)")
    connection.add_arguments(parser, suppress=suppress)
    parser.add_argument("--http-address", dest="http_address", default=default(None), metavar="HOST:PORT",
                        help="Temporal's HTTP API (frontend httpPort): operations without --wait go there, "
                             "much faster to start (default: $TEMPORAL_HTTP_ADDRESS; none: gRPC only)")


def _output_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", choices=["text", "json", "yaml"], default="text")


def build_parser(argv: list[str] | None = None, prog: str = "canaryctl") -> argparse.ArgumentParser:
    """The whole command line; each subcommand sets ``func``.

    ``dev`` comes from ``devenv.cli``, which loads the dev tooling: it is mounted only when
    ``argv`` may name it (``None``: always), so other commands start without it. Likewise a
    command that ``argv`` does not name is only listed (for ``--help`` and the "invalid choice"
    message), without its options: argparse parses with the named command's parser alone.
    """
    parser = argparse.ArgumentParser(prog=prog, description="Progressive delivery for Kubernetes "
                                     "Deployments: every canary job is a durable Temporal workflow.")
    _connection_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _connection_options(common, suppress=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    named = None if argv is None else set(argv)

    def command(
        name: str, func: Callable[..., Any], help_text: str, job: bool = True
    ) -> argparse.ArgumentParser:
        if named is not None and name not in named:
            # Listed only; what the caller adds to it is never parsed. A few options at most:
            # the shared connection options are most of the cost, and are left out.
            return sub.add_parser(name, help=help_text, add_help=False)
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        if job:
            p.add_argument("job", metavar="JOB", help="name of the canary job")
        p.set_defaults(func=func)
        return p

    def waits(p: argparse.ArgumentParser) -> None:
        p.add_argument("--wait", action="store_true",
                       help="then follow the release to its end: exit 0 promoted, 1 failed/terminated/rolled "
                            "back, 2 timeout or unreachable")

    p = command("apply", _cmd_apply, "create a job from a YAML/JSON file, or update a running job's rules",
                job=False)
    p.add_argument("-f", "--filename", required=True, help="job file (YAML or JSON; - for stdin)")
    waits(p)
    p.add_argument("--timeout", type=timeout_seconds, default=None,
                   help=f"with --wait: how long to follow the release (default: {DEFAULT_WAIT})")
    p = command("lint", _cmd_lint, "check job files offline, as apply would (every problem, with its field)",
                job=False)
    p.add_argument("-f", "--filename", required=True, help="job file, several documents allowed (- for stdin)")
    p = command("convert", _cmd_convert, "print the job equivalent to an Argo Rollouts Rollout "
                "(AnalysisTemplates in the same file are carried over)", job=False)
    p.add_argument("-f", "--filename", required=True, help="Rollout manifest (- for stdin)")
    p.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    p = command("list", _cmd_list, "list jobs (all namespaces unless -n is given)", job=False)
    p.add_argument("--phase", choices=[phase.value for phase in Phase])
    p.add_argument("--all", action="store_true", help="include jobs that have ended")
    _output_option(p)
    p = command("get", _cmd_get, "show a job: phase, steps, weight, versions")
    p.add_argument("-w", "--watch", action="store_true", help="redraw every second until the job is idle")
    _output_option(p)
    p = command("history", _cmd_history, "show the versions the job has delivered")
    _output_option(p)
    p = command("status", _cmd_status, "follow the current release until it ends: exit 0 promoted (or nothing "
                "to deliver), 1 failed/terminated/rolled back, 2 timeout or unreachable")
    p.add_argument("--timeout", type=timeout_seconds, default=None,
                   help=f"give up (exit 2) after this long, e.g. 90s, 10m, 1h (default: {DEFAULT_WAIT})")
    _output_option(p)
    p.set_defaults(wait=True)

    def operation(name: str, func: Callable[..., Any], help_text: str, *, wait: bool = False
                  ) -> argparse.ArgumentParser:
        p = command(name, func, help_text)
        if wait:
            waits(p)
        p.add_argument("--timeout", type=timeout_seconds, default=None,
                       help=f"seconds (or 10m, 1h) to wait for the job to answer (default: {ANSWER_TIMEOUT:.0f})"
                       + (f"; with --wait, for the release to end (default: {DEFAULT_WAIT})" if wait else ""))
        return p

    p = operation("set-image", _cmd_set_image, "deliver a new image (starts a canary release)", wait=True)
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("-c", "--container",
                   help="container to change; required when the pod has several ('*': all of them)")
    p = operation("update-rules", _cmd_update_rules, "replace the job's steps and traffic policy")
    p.add_argument("-f", "--filename", required=True, help="rules file, or a whole job file")
    for name, help_text in ((names.CONTINUE, "end the current pause"),
                            (names.PROMOTE, "skip the remaining steps and promote the canary")):
        p = operation(name, _simple(name), help_text + " (of the release and step shown now, unless named)",
                      wait=True)
        p.add_argument("--release", type=int, metavar="N",
                       help="the release (canary revision) meant; refused if no longer current")
        p.add_argument("--step", type=int, metavar="N",
                       help="the step (1-based, as `get` shows it) meant; refused if no longer current")
    p = operation("terminate", _simple(names.TERMINATE), "abort the release and return to stable")
    p.add_argument("--reason", help="why (kept in the job's history)")
    p = operation("rollback", _cmd_rollback, "deliver an earlier revision again", wait=True)
    p.add_argument("--to-revision", type=int, required=True, metavar="N")
    p.add_argument("--skip-steps", action="store_true", help="roll out at once instead of step by step")
    operation("delete", _simple(names.DELETE), "give the Deployment back and end the job")

    if argv is None or "dev" in argv:
        from devenv import cli as dev_cli

        dev_cli.register(sub)  # ``canaryctl dev ...``: the dev environment lives in devenv
    else:
        sub.add_parser("dev", help="run Temporal, a local Kubernetes cluster, Prometheus and a worker")
    return parser


def _timeouts(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Split ``--timeout`` into the answer's bound and the whole wait's, and check its upper bound."""
    timeout = getattr(args, "timeout", None)
    wait = getattr(args, "wait", False)
    if timeout is not None and not wait and timeout > MAX_TIMEOUT:
        parser.error(f"argument --timeout: must be more than 0 and at most {MAX_TIMEOUT:.0f} seconds without "
                     f"--wait, not {timeout:g}")
    args.wait_timeout = timeout if timeout is not None else timeout_seconds(DEFAULT_WAIT)
    args.answer_timeout = min(timeout, ANSWER_TIMEOUT) if wait and timeout else (timeout or ANSWER_TIMEOUT)


def _error(message: str) -> None:
    # One line says what went wrong; any context (a log tail) follows indented.
    lines = message.splitlines() or ["failed"]
    print(f"error: {lines[0]}", file=sys.stderr)
    for line in lines[1:]:
        print(f"  {line}", file=sys.stderr)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Entry point of ``canaryctl`` (and ``kubectl-canary``); returns the exit status.

    Every command closes what it opened before it returns, and :func:`lifecycle.settle` lets
    the Temporal SDK's Rust threads leave the interpreter before it finalizes: without that,
    about one run in two of a short command died at exit with "Fatal Python error:
    PyGILState_Release" (exit 134) after doing its work (see :mod:`starter.lifecycle`).
    """
    status = run(argv, prog)
    if "temporalio" in sys.modules:
        from starter import lifecycle

        lifecycle.settle()
    return status


def kubectl_plugin() -> int:
    """Entry point of ``kubectl-canary``: ``kubectl canary get web`` runs ``canaryctl get web``."""
    return main(prog="kubectl canary")


def run(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Parse the command line and run the command; every failure becomes ``error: ...``."""
    words = sys.argv[1:] if argv is None else argv
    parser = build_parser(words, prog=prog or "canaryctl")
    args = parser.parse_args(words)
    _timeouts(parser, args)
    try:
        result = args.func(args)
        if hasattr(result, "__await__"):
            from starter import lifecycle

            result = lifecycle.run(result)
        return int(result)
    except (Exception, KeyboardInterrupt) as err:
        return _failure(err, args)


def _usage_lines(err: BaseException) -> list[str] | None:
    """The lines of a usage error (bad file or argument), or None for any other failure."""
    if isinstance(err, SpecError):
        return err.lines
    if "pydantic" in sys.modules:  # never loaded: no model can have refused anything
        from pydantic import ValidationError

        if isinstance(err, ValidationError):
            return validation_lines(err)
    return None


def _failure(err: BaseException, args: argparse.Namespace) -> int:
    """Report ``err`` on one line (or several, one per bad field) and give the exit code."""
    usage = _usage_lines(err)
    if usage is not None:
        # A bad job file, or an argument the request model refuses (e.g. --to-revision 0).
        for line in usage:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_USAGE
    dev_error = getattr(sys.modules.get("devenv.cli"), "DevError", None)
    if isinstance(err, CanaryError) or (dev_error is not None and isinstance(err, dev_error)):
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
