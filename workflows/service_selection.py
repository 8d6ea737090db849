"""The messages between the workflow and the blue-green Service activities.

Plain data, like :mod:`workflows.routing`. A blue-green job aims Services at one version's pods:
the active Service (the user's, which users hit) and the preview Service (the new version's).
The workflow names the version by its template hash and by which Deployment runs it (the
user's, or ``<name>-canary``); the activity finds that Deployment's ReplicaSet of the version
and adds its ``pod-template-hash`` to the Service's own selector, in one guarded write.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)


class Side(StrEnum):
    """Which Deployment runs the pods a Service is aimed at."""

    STABLE = "stable"  # the user's Deployment (blue, or the new version once handed over)
    CANARY = "canary"  # ``<name>-canary`` (green)


class BlueGreenServices(_Model):
    """A blue-green job's Services, as its spec names them."""

    namespace: str
    job: str
    workload: str  # the Deployment: the preview Service the job creates takes its ownerReference
    active_service: str = Field(alias="activeService")
    preview_service: str | None = Field(default=None, alias="previewService")


class SelectRequest(BlueGreenServices):
    """Aim ``service`` (the active or the preview one) at the pods of ``template_hash`` run by ``side``.

    ``ready``: at least this many of those pods must be available, or the Service is not
    touched (the activity says "not yet" and Temporal asks again): a Service never switches to
    a version with no pod to answer.
    """

    service: str
    side: Side
    template_hash: str = Field(alias="templateHash")
    ready: int = Field(ge=0)


class Selection(_Model):
    """What a Service selects after the write, read back from the object."""

    service: str
    selector: dict[str, str]
    pod_template_hash: str | None = Field(default=None, alias="podTemplateHash")


class RestoreRequest(BlueGreenServices):
    """Give the Services back their own selectors (the active Service selects every pod of the workload).

    ``remove_preview``: the job is being deleted, so a preview Service it created goes too.
    """

    remove_preview: bool = Field(default=False, alias="removePreview")
