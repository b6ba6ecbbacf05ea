"""Progress of long work: a redrawn bar on a terminal, a plain line every N seconds in a file or pipe.

  progress = Progress(total=2000, label="voice_encoder")
  progress.update(step, {"loss": 0.41, "examples/s": 187.0})     # as often as you like
  progress.close()

On a terminal it draws Keras' Progbar (redrawn at most once a second). Anywhere else (a log file,
a pipe, CI) a redrawn bar would write one frame per update, so it writes one plain line every
`every_seconds`, and only once another `min_fraction` of the work is done (so a slow machine's log
stays as short as a fast one's: at most 1 / min_fraction lines per run), and one at the end:

  [voice_encoder] step 400/2000 (20%) loss 0.412 examples/s 187 eta 2m51s
"""

from __future__ import annotations

import sys
import time
from typing import IO


def _eta(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _number(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


class Progress:
    """Args:
    total: the last step.
    label: what is progressing (printed in brackets).
    stream: where to write (default sys.stderr, so a command's result on stdout stays clean).
    every_seconds: interval of the plain lines when `stream` is not a terminal.
    min_fraction: ... and the least progress (a fraction of `total`) between two of them.
    enabled: False writes nothing (non-chief workers).
    terminal: force the terminal (True) or plain (False) display; default: stream.isatty().
    """

    def __init__(
        self,
        total: int,
        label: str,
        stream: IO[str] | None = None,
        every_seconds: float = 60.0,
        enabled: bool = True,
        terminal: bool | None = None,
        min_fraction: float = 0.04,
    ):
        self.total = int(total)
        self.label = label
        self.stream = stream or sys.stderr
        self.every_seconds = every_seconds
        self.min_steps = min_fraction * self.total
        self.enabled = enabled
        if terminal is None:
            isatty = getattr(self.stream, "isatty", None)
            terminal = bool(isatty and isatty())
        self.terminal = terminal
        self._bar = None
        self._started = time.monotonic()
        self._first_step: int | None = None
        self._last_line = -float("inf")
        self._last_step: int | None = None

    def update(self, step: int, values: dict[str, float] | None = None) -> None:
        if not self.enabled:
            return
        values = values or {}
        if self._first_step is None:
            self._first_step, self._started = step, time.monotonic()
        if self.terminal:
            if self._bar is None:
                import keras  # only on a terminal

                self._bar = keras.utils.Progbar(
                    self.total, stateful_metrics=list(values), verbose=1, interval=1.0
                )
            self._bar.update(step, list(values.items()))
            return
        now = time.monotonic()
        if (
            step < self.total
            and self._last_step is not None
            and (
                now - self._last_line < self.every_seconds
                or step - self._last_step < self.min_steps
            )
        ):
            return
        self._last_line = now
        self._write_line(step, values, now)

    def _write_line(self, step: int, values: dict[str, float], now: float) -> None:
        if step == self._last_step:
            return
        self._last_step = step
        parts = [f"[{self.label}] step {step}/{self.total}"]
        if self.total:
            parts.append(f"({100 * step // self.total}%)")
        parts += [f"{k} {_number(float(v))}" for k, v in values.items()]
        done = step - (self._first_step or 0)
        if 0 < done and step < self.total:
            parts.append(f"eta {_eta((self.total - step) * (now - self._started) / done)}")
        print(" ".join(parts), file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar = None
