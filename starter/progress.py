"""Progress of a followed release as a CI log wants it (one line per change) or a terminal (a live bar).

Pure formatting plus one writer: :func:`progress_line` is tested with fixed data; a
:class:`ProgressReporter` prints a line only when phase, step or weight changed, and on a
terminal redraws one bar in place instead.
"""

from __future__ import annotations

from typing import TextIO

from workflows.models import JobDetails

BAR_WIDTH = 20


def progress_line(details: JobDetails) -> str:
    """``shop/web  release 3  step 2/4 pause (running)  weight 25%  paused``: what moved."""
    parts = [f"{details.namespace}/{details.name}"]
    if details.canary is not None:
        parts.append(f"release {details.canary.revision}")
    if details.current_step is not None and details.steps:
        step = details.steps[details.current_step]
        parts.append(f"step {details.current_step + 1}/{len(details.steps)} {step.description} ({step.status.value})")
    parts.append(f"weight {details.weight}%")
    parts.append(details.phase.value)
    if details.pause_reason:
        parts.append(f"waiting: {details.pause_reason}")
    elif details.last_error and details.canary is not None:
        parts.append(f"last error: {details.last_error}")
    return "  ".join(parts)


def progress_bar(details: JobDetails) -> str:
    """``[#####---------------]  25%  step 2/4 ...``: the weight as a bar, then the same facts."""
    filled = round(BAR_WIDTH * details.weight / 100)
    return f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {details.weight:>3}%  {progress_line(details)}"


class ProgressReporter:
    """Prints each change of a release's progress to ``stream``; a live bar when ``live``."""

    def __init__(self, stream: TextIO, *, live: bool) -> None:
        self.stream, self.live = stream, live
        self._last = ""
        self._width = 0

    def __call__(self, details: JobDetails) -> None:
        """Report one ``details`` answer (nothing when nothing moved and no bar is drawn)."""
        if self.live:
            text = progress_bar(details)
            self.stream.write("\r" + text + " " * max(0, self._width - len(text)))
            self._width = len(text)
            self.stream.flush()
            return
        line = progress_line(details)
        if line != self._last:
            self.stream.write(line + "\n")
            self.stream.flush()
        self._last = line

    def close(self) -> None:
        """End the bar's line, so what follows starts on a fresh one."""
        if self.live and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0
