"""Every place the API checks a secret asks the guard first and tells it how the check went.

    guard.admit(request)                     429 while the client address must wait
    guard.failed(request, Refusal.EXPIRED)   counted by reason; the address's throttle grows
    guard.succeeded(request)                 the address's failures are forgotten

The throttle (api/throttle.py) is per client address, as uvicorn reports it: behind a reverse
proxy that uvicorn trusts (FORWARDED_ALLOW_IPS), the X-Forwarded-For address. Devices and
people behind one NAT share an address, and so share its record: one client failing over and
over makes the others wait too (the warning in the log names the address).

Metrics: `mingliang_api_auth_failures_total{reason}` and `mingliang_api_auth_throttled_total`.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Final

from fastapi import HTTPException, Request
from prometheus_client import CollectorRegistry, Counter

from api.throttle import MonotonicClock, Throttle
from config.settings import AuthSettings
from devices.tokens import Refusal

log = logging.getLogger(__name__)

UNKNOWN_ADDRESS: Final = "unknown"


def client_address(request: Request) -> str:
    """Where the request came from, as the audit trail and the throttle name it."""
    return request.client.host if request.client else UNKNOWN_ADDRESS


def make_throttle(settings: AuthSettings, clock: MonotonicClock = time.monotonic) -> Throttle:
    return Throttle(
        free_failures=settings.free_failures,
        window_s=settings.failure_window_s,
        penalty_initial_s=settings.penalty_initial_s,
        penalty_max_s=settings.penalty_max_s,
        max_addresses=settings.tracked_addresses,
        clock=clock,
    )


class AuthGuard:
    """The throttle with its counters and its log line. `throttle` may be replaced (tests
    give it a clock of their own)."""

    def __init__(self, settings: AuthSettings, registry: CollectorRegistry) -> None:
        self.throttle = make_throttle(settings)
        self._failures = Counter(
            "mingliang_api_auth_failures",
            "Failed authentications (API and camera tokens, sign-ins, session cookies), by reason",
            ["reason"],
            registry=registry,
        )
        for reason in Refusal:  # every reason shown from the start, at 0
            self._failures.labels(reason.value)
        self._throttled = Counter(
            "mingliang_api_auth_throttled",
            "Requests refused with 429 because their address failed too often, unchecked",
            registry=registry,
        )

    def admit(self, request: Request) -> None:
        """429 with Retry-After while the request's address must wait; nothing is checked."""
        address = client_address(request)
        wait = self.throttle.wait(address)
        if wait <= 0:
            return
        self._throttled.inc()
        seconds = max(1, math.ceil(wait))
        raise HTTPException(
            429,
            f"too many failed authentication attempts from {address} "
            f"({self.throttle.failures(address)} in a row): try again in {seconds} s. "
            "Until then no token, sign-in or session from this address is checked; every "
            f"further failure doubles the wait, up to {self.throttle.penalty_max_s:g} s",
            headers={"Retry-After": str(seconds)},
        )

    def failed(self, request: Request, reason: Refusal, *, throttle: bool = True) -> None:
        """Count a failed check; with `throttle`, the address's record grows too."""
        self._failures.labels(reason.value).inc()
        if not throttle:
            return
        address = client_address(request)
        failure = self.throttle.failed(address)
        if failure.started:
            # Once per address and record, not per request: a guessing client would
            # otherwise write a line per attempt.
            log.warning(
                "authentication from %s slowed down after %d failures in a row (last: %s): "
                "it waits %g s, doubling with each further failure up to %g s",
                address,
                failure.failures,
                reason.value,
                failure.wait_s,
                self.throttle.penalty_max_s,
            )

    def succeeded(self, request: Request) -> None:
        self.throttle.succeeded(client_address(request))
