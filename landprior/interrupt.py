"""Stopping long training runs cleanly on Ctrl-C (SIGINT) or a scheduler's SIGTERM.

Killing a training loop mid-step loses every step since its last checkpoint (a step
half-applied to the weights cannot be saved). :class:`StopOnSignal` turns the first signal
into a request the loop checks after each step: it then saves its state and raises
:class:`TrainingInterrupted`, which the CLI reports in one line and exits 128 + signum
(130 for Ctrl-C, 143 for SIGTERM). Used by the diffusion prior's and the segmenter's
training loops.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class TrainingInterrupted(KeyboardInterrupt):
    """A run stopped by SIGINT / SIGTERM after saving its last finished step.

    ``signum`` is the signal (the CLI exits with 128 + signum: 130 for Ctrl-C, 143 for a
    scheduler's SIGTERM); ``checkpoint`` the file a resumed run continues from.
    """

    def __init__(self, signum: int, step: int, checkpoint: Path) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; "
                         f"{checkpoint} holds it (resume continues from there)")  # fmt: skip
        self.signum, self.step, self.checkpoint = signum, step, checkpoint


class StopOnSignal:
    """While training: SIGINT / SIGTERM set ``signum`` so that the loop stops after the
    current step (and checkpoints it) instead of dying mid-step. A second signal stops at
    once (KeyboardInterrupt). Signal handlers exist only in the main thread; elsewhere this
    is a no-op and ``signum`` stays None.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            self.__exit__()
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("%s: stopping after this step and saving a checkpoint (again: stop now)",
                    signal.Signals(signum).name)

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}
