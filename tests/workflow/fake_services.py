"""In-memory active and preview Services of a blue-green job, for time-skipping tests.

The real activities (activities/blue_green.py) are tested against the real API server in
tests/e2e/test_blue_green_e2e.py; here the workflow's order of things is what matters. The fake
keeps what each Service selects (None: its user's own selector, every pod of the workload; else
a side and a version's template hash), every write with the Ready pods it selected then, and
``active_ready``: how many Ready pods the active Service selected after every cluster write,
so a test can assert it never answered with none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import errors
from workflows import port
from workflows.service_selection import BlueGreenServices, RestoreRequest, Selection, SelectRequest, Side

# (side, template hash) -> Ready pods of that version in that Deployment.
ReadyPods = Callable[[Side, str], int]


@dataclass(frozen=True)
class Switch:
    """One write to a Service: what it selects from then on, and how many of those pods were Ready."""

    service: str
    side: Side | None  # None: given back its user's own selector
    template_hash: str | None
    ready: int


class FakeServices:
    """The Services a blue-green job aims; ``ready_pods`` and ``all_ready`` come from the fake cluster."""

    def __init__(self, ready_pods: ReadyPods, all_ready: Callable[[], int],
                 log: Callable[[str, object], None]) -> None:
        self._ready = ready_pods
        self._all = all_ready
        self._log = log
        self.existing = {"web"}  # Services in the namespace
        self.selects: dict[str, tuple[Side, str] | None] = {}
        self.created: set[str] = set()  # preview Services the job created
        self.switches: list[Switch] = []
        self.active_ready: list[int] = []
        self.active = "web"
        self.problem: tuple[str, str] | None = None

    def refuse(self, field: str, message: str) -> None:
        """From now on ``check_blue_green`` says the spec does not fit the cluster."""
        self.problem = (field, message)

    def serving(self, service: str) -> int:
        """Ready pods ``service`` selects now."""
        target = self.selects.get(service)
        return self._all() if target is None else self._ready(*target)

    def note(self) -> None:
        """After a cluster write: how many Ready pods the active Service selects."""
        self.active_ready.append(self.serving(self.active))

    def activities(self) -> list[Callable[..., object]]:
        return [self.check_blue_green, self.select_pods, self.restore_services]

    @activity.defn(name=port.CHECK_BLUE_GREEN.name)
    async def check_blue_green(self, req: BlueGreenServices) -> None:
        self.active = req.active_service
        if self.problem is not None:
            field, message = self.problem
            raise ApplicationError(f"{field}: {message}", field, type=errors.ROUTER_CONFIG_INVALID, non_retryable=True)

    @activity.defn(name=port.SELECT_PODS.name)
    async def select_pods(self, req: SelectRequest) -> Selection:
        ready = self._ready(req.side, req.template_hash)
        if ready < req.ready:
            raise ApplicationError(f"{ready} of {req.ready} pods available", type=errors.STABLE_NOT_ROLLED_OUT)
        if req.service not in self.existing:
            self.existing.add(req.service)
            self.created.add(req.service)
        if self.selects.get(req.service) != (req.side, req.template_hash):
            self.selects[req.service] = (req.side, req.template_hash)
            self.switches.append(Switch(req.service, req.side, req.template_hash, ready))
            self._log("select", (req.service, req.side.value, req.template_hash))
            self.note()
        return Selection(service=req.service, selector={"app": "web", "pod-template-hash": req.template_hash[:10]},
                         pod_template_hash=req.template_hash[:10])

    @activity.defn(name=port.RESTORE_SERVICES.name)
    async def restore_services(self, req: RestoreRequest) -> None:
        for name in (req.active_service, req.preview_service):
            if name is None or name not in self.existing:
                continue
            if name in self.created and req.remove_preview:
                self.existing.discard(name)
                self.created.discard(name)
                self.selects.pop(name, None)
                self._log("delete_service", name)
                continue
            if self.selects.get(name) is not None:
                self.selects[name] = None
                self.switches.append(Switch(name, None, None, self._all()))
                self._log("restore", name)
                self.note()
