"""Clients for one run: every one with the same retry policy, and every call counted.

This module knows nothing of where the clients point. Real AWS opens a boto3 session
(:func:`open_session`); the local stack builds its own clients on its emulator. Either way
they go through a :class:`ClientFactory`, so the rest of the package cannot tell them apart.

The retry policy: botocore's adaptive mode retries throttling and 5xx answers with exponential
backoff and jitter, and slows the client down when the service throttles it, so a busy account
makes a run slower, not failed. Errors that retrying cannot fix (access denied, a missing
queue) still raise.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.config import Config

from ..errors import ConfigurationError, InfrastructureError, NipypeBatchError

MAX_ATTEMPTS = 10
# Connections each client keeps: a node directory's files move in parallel, and a large file
# in ranged parts (see staging), more at once than botocore's default of 10.
MAX_POOL_CONNECTIONS = 32


def client_config(max_attempts: int = MAX_ATTEMPTS) -> Config:
    """The botocore config every client of this package is built with."""
    return Config(
        retries={"mode": "adaptive", "max_attempts": max_attempts},
        user_agent_extra="nipype-batch",
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=MAX_POOL_CONNECTIONS,
    )


class ApiCallCounter:
    """Attach to any number of boto3 clients; ``counts`` maps 'service.Operation' to calls."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def attach(self, client: Any) -> Any:
        """Count every call ``client`` makes from now on; return the client."""
        service = client.meta.service_model.service_name
        client.meta.events.register(
            f"before-call.{client.meta.service_model.service_id.hyphenize()}",
            lambda model, **_: self.counts.update([f"{service}.{model.name}"]),
        )
        return client


class ClientFactory:
    """Makes the clients of one run, each with :func:`client_config` and counted.

    Parameters
    ----------
    make : callable
        ``make(service, config)`` returns a boto3 client: a session's ``client`` with an
        endpoint (see :meth:`for_session`), or the local stack's.
    max_attempts : int
        Attempts per call, for the retry policy.
    counter : ApiCallCounter, optional
        Where calls are counted (a new one if not given).
    """

    def __init__(self, make: Callable[[str, Config], Any], max_attempts: int = MAX_ATTEMPTS,
                 counter: ApiCallCounter | None = None) -> None:
        self._make = make
        self.max_attempts = max_attempts
        self.counter = counter or ApiCallCounter()

    @classmethod
    def for_session(cls, session: Any, endpoint_url: str | None = None,
                    max_attempts: int = MAX_ATTEMPTS) -> ClientFactory:
        """Clients of a boto3 session, at ``endpoint_url`` if one is given."""
        return cls(lambda service, config: session.client(
            service, endpoint_url=endpoint_url, config=config), max_attempts)

    def __call__(self, service: str) -> Any:
        """A new, counted client for ``service``."""
        return self.counter.attach(self._make(service, client_config(self.max_attempts)))


@dataclass(frozen=True)
class SessionHints:
    """How the user of one entry point gives what a session needs: the fixes its errors name.

    The wording of every session, region and credentials error is here; each entry point
    (``plugin_args``, the command line) only says how its user sets a region or a profile.
    """

    error: type[NipypeBatchError]
    set_region: str  # e.g. "set plugin_args={'region': 'us-east-1'}"
    profile_fix: str = ""  # what to do besides listing the profiles
    credentials_fix: str = ""  # where else credentials can come from


PLUGIN_ARGS = SessionHints(
    ConfigurationError,
    set_region="set plugin_args={'region': 'us-east-1'} (or $AWS_DEFAULT_REGION)",
    profile_fix=", or leave aws_profile unset",
    credentials_fix=", or plugin_args={'aws_profile': ...}",
)
COMMAND_LINE = SessionHints(
    InfrastructureError, set_region="pass --region us-east-1 (or set $AWS_DEFAULT_REGION)"
)


def no_credentials_message(hints: SessionHints = PLUGIN_ARGS) -> str:
    """What to say when boto3 finds no credentials at all."""
    return ("no AWS credentials found. Run `aws configure` "
            f"(or set AWS_PROFILE{hints.credentials_fix}).")


def open_session(profile: str | None, region: str | None,
                 hints: SessionHints = PLUGIN_ARGS) -> Any:
    """A boto3 session for a named profile and region; errors say how to fix the settings."""
    import boto3

    try:
        session = boto3.Session(profile_name=profile, region_name=region)
    except Exception as exc:
        raise hints.error(
            f"cannot open AWS profile {profile!r}: {exc}. List yours with "
            f"`aws configure list-profiles`{hints.profile_fix}."
        ) from exc
    if not session.region_name:
        raise hints.error(f"no AWS region: {hints.set_region}.")
    return session
