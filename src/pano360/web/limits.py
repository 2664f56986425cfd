"""What a web user may ask for, how often, and who may ask: request limits, a per-client rate limit,
a job gate with cancellation, and the login check. No web framework here (the Gradio page is
:mod:`.app`); everything is checked before any model work starts.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidInputError

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class JobCancelled(InvalidInputError):
    """The user cancelled the request (raised from the step callback; nothing is written)."""


@dataclass(frozen=True)
class RequestLimits:
    """The largest request a web user may make (``pano360 serve --max-size/--max-steps/--max-prompt-chars``).

    Sizes are pixels, HEIGHTxWIDTH; ``max_width`` defaults to twice ``max_height`` (a full sphere)."""

    max_height: int = 1024
    max_width: int = 2048
    max_steps: int = 100
    max_prompt_chars: int = 1000

    def check(self, height: int | None = None, width: int | None = None, steps: int | None = None,
              prompt: str | None = None, negative_prompt: str | None = None) -> None:
        """One line naming the limit for the first value over it."""
        for text, what in ((prompt, "prompt"), (negative_prompt, "negative prompt")):
            if isinstance(text, str) and len(text) > self.max_prompt_chars:
                raise InvalidInputError(f"the {what} has {len(text)} characters; this server accepts at most "
                                        f"{self.max_prompt_chars} (shorten it)")
        if isinstance(height, int) and isinstance(width, int) and (height > self.max_height or width > self.max_width):
            raise InvalidInputError(f"{height}x{width} (HxW) is larger than this server allows: at most "
                                    f"{self.max_height}x{self.max_width} (choose a smaller size)")
        for value, limit, what in ((height, self.max_height, "height"), (width, self.max_width, "width")):
            if isinstance(value, int) and value > limit:
                raise InvalidInputError(f"a {what} of {value} px is larger than this server allows (at most {limit})")
        if isinstance(steps, int) and steps > self.max_steps:
            raise InvalidInputError(f"{steps} steps are more than this server allows: at most {self.max_steps}")


def parse_size_limit(text: str) -> tuple[int, int]:
    """``"1024x2048"`` (HEIGHTxWIDTH) → (1024, 2048); one line otherwise."""
    parts = str(text).lower().split("x")
    try:
        height, width = (int(part) for part in parts)
    except ValueError:
        raise InvalidInputError(f"--max-size must be HEIGHTxWIDTH in pixels, e.g. 1024x2048, got {text!r}") from None
    if height < 8 or width < 8:
        raise InvalidInputError(f"--max-size must be at least 8x8 pixels, got {text!r}")
    return height, width


class RateLimiter:
    """At most ``per_minute`` requests per client in any 60 s window (0 = no limit)."""

    def __init__(self, per_minute: int = 0, window_s: float = 60.0, clock=time.monotonic):
        if per_minute < 0:
            raise InvalidInputError(f"--rate-limit must be >= 0 requests per minute, got {per_minute}")
        self.per_minute = int(per_minute)
        self.window_s = float(window_s)
        self._clock = clock
        self._seen: dict[str, deque] = {}
        self._lock = threading.Lock()

    def check(self, client: str) -> None:
        """Count one request of ``client``; one line (with the wait) when over the limit."""
        if not self.per_minute:
            return
        now = self._clock()
        with self._lock:
            times = self._seen.setdefault(client or "?", deque())
            while times and now - times[0] >= self.window_s:
                times.popleft()
            if len(times) >= self.per_minute:
                wait = self.window_s - (now - times[0])
                raise InvalidInputError(f"too many requests: this server takes {self.per_minute} per minute from "
                                        f"one client; try again in {wait:.0f} s")
            times.append(now)
            if len(self._seen) > 10000:  # forget idle clients
                for key in [k for k, v in self._seen.items() if not v or now - v[-1] >= self.window_s]:
                    del self._seen[key]


class JobGate:
    """At most ``limit`` jobs on the device at once; waiting jobs go in **shortest first** order.

    A job's ``cost`` is its work in pixel-steps (height × width × steps). When a slot frees, the
    waiting job with the smallest cost runs next, ties in arrival order; a job that has waited
    ``max_wait_s`` is served in arrival order ahead of newer ones (no starvation). So a short request
    is let through past long ones instead of waiting for all of them, and equal requests keep their
    order. The web page hands the gate up to ``limit + lookahead`` requests at once (the rest wait in
    Gradio's queue, which shows their position and ETA). Cancellation is per client session;
    ``peak`` is the most jobs that ran at once.
    """

    def __init__(self, limit: int = 1, lookahead: int = 8, max_wait_s: float = 120.0, clock=time.monotonic):
        if limit < 1:
            raise InvalidInputError(f"--concurrency must be >= 1, got {limit}")
        self.limit = int(limit)
        self.lookahead = int(lookahead)
        self.max_wait_s = float(max_wait_s)
        self._clock = clock
        self._slots = threading.Semaphore(self.limit)  # also taken by short device work outside run()
        self._lock = threading.Condition()
        self._waiting: list[tuple[float, int, float]] = []  # (cost, arrival number, arrival time)
        self._arrivals = 0
        self._cancel: dict[str, threading.Event] = {}
        self.active = 0
        self.peak = 0
        self.max_waiting = 0  # the longest the gate's own waiting line has been
        self.order: deque = deque(maxlen=1000)  # arrival numbers in the order they started (for tests)

    def cancel(self, client: str) -> bool:
        """Ask the job of ``client`` (running, or waiting in the gate) to stop; True when there was one."""
        with self._lock:
            event = self._cancel.get(client)
            if event is not None:
                event.set()
                self._lock.notify_all()
        return event is not None

    def _next(self, now: float):
        """The ticket that runs next: the oldest one past max_wait_s, else the cheapest (ties: oldest)."""
        overdue = [ticket for ticket in self._waiting if now - ticket[2] >= self.max_wait_s]
        if overdue:
            return min(overdue, key=lambda ticket: ticket[1])
        return min(self._waiting, key=lambda ticket: (ticket[0], ticket[1]))

    def waiting_ahead(self, cost: float) -> int:
        """How many waiting jobs would run before a new one of ``cost``."""
        with self._lock:
            return sum(1 for ticket in self._waiting if ticket[0] <= cost) + self.active

    def run(self, client: str, work, cost: float = 0.0, on_wait=None):
        """``work(check)`` on the device; ``check()`` raises :class:`JobCancelled` once cancelled.
        ``on_wait(ahead)`` is told how many jobs run or go before this one while it waits."""
        event = threading.Event()
        key = client or "?"
        with self._lock:
            self._arrivals += 1
            ticket = (float(cost), self._arrivals, self._clock())
            self._waiting.append(ticket)
            self.max_waiting = max(self.max_waiting, len(self._waiting))
            self._cancel[key] = event
            try:
                while True:
                    if event.is_set():
                        raise JobCancelled("cancelled: nothing was saved")
                    if self.active < self.limit and self._next(self._clock()) is ticket \
                            and self._slots.acquire(blocking=False):
                        break
                    if on_wait is not None:
                        on_wait(self.active + sum(1 for t in self._waiting if t is not ticket and
                                                  (t[0], t[1]) < (ticket[0], ticket[1])))
                    self._lock.wait(timeout=1.0)  # re-check: overdue jobs and the clock move on
            except BaseException:
                self._waiting.remove(ticket)
                if self._cancel.get(key) is event:
                    del self._cancel[key]
                self._lock.notify_all()
                raise
            self._waiting.remove(ticket)
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.order.append(ticket[1])
        try:
            def check():
                if event.is_set():
                    raise JobCancelled("cancelled: nothing was saved")

            return work(check)
        finally:
            self._slots.release()
            with self._lock:
                self.active -= 1
                if self._cancel.get(key) is event:
                    del self._cancel[key]
                self._lock.notify_all()


def parse_auth(text: str) -> tuple[str, str]:
    """``--auth USER:PASS`` → (user, password); one line otherwise."""
    user, sep, password = str(text).partition(":")
    if not sep or not user or not password:
        raise InvalidInputError("--auth must be USER:PASS with both parts non-empty, e.g. --auth ana:correct-horse")
    return user, password


def read_token_file(path: str | os.PathLike) -> str:
    """The secret token in the first line of ``path`` (at least 16 characters)."""
    try:
        token = Path(path).read_text(encoding="utf-8").splitlines()[0].strip() if Path(path).stat().st_size else ""
    except (OSError, UnicodeDecodeError, IndexError) as error:
        raise InvalidInputError(f"--token-file {path}: cannot be read ({error.__class__.__name__}); put a secret "
                                "token on its first line") from None
    if len(token) < 16:
        raise InvalidInputError(f"--token-file {path}: the token on its first line must have at least 16 characters "
                                "(e.g. python -c \"import secrets; print(secrets.token_urlsafe())\")")
    return token


def login_check(users: dict[str, str], token: str | None):
    """A Gradio ``auth`` callable: a known user with their password, or any user name with the token."""

    def check(user: str, password: str) -> bool:
        expected = users.get(user)
        ok = expected is not None and secrets.compare_digest(str(password).encode(), expected.encode())
        if token is not None:
            ok = secrets.compare_digest(str(password).encode(), token.encode()) or ok
        return ok

    return check


def check_exposure(host: str, auth: str | None, token_file: str | None) -> None:
    """Binding anything but loopback needs a login: one line otherwise, before anything loads."""
    if host not in LOOPBACK_HOSTS and not auth and not token_file:
        raise InvalidInputError(f"--host {host} makes the app reachable from other machines, so it needs a login: "
                                "add --auth USER:PASS or --token-file FILE (or keep the default --host 127.0.0.1)")
