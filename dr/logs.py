"""Logging set-up: one structlog configuration, chosen once by the CLI.

Events are fixed snake_case names with data as key-value pairs
(``step_retrying step=argo-sync attempt=2 delay=4.0``). A human console on a
TTY, JSON lines otherwise (a CronJob's logs go to Loki/Elasticsearch, not to a
person). The redaction processor runs last before rendering, so nothing a
step logs can carry a registered secret or a value under a secret-looking key.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Collection, MutableMapping
from typing import Any, Literal, TextIO

import structlog

from dr import secret

LogFormat = Literal["auto", "console", "json"]


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: scrub secrets from every field of every event."""
    return {
        key: (secret.MASK if secret.is_secret_key(key) and value not in (None, "") else secret.redact_value(value))
        for key, value in event_dict.items()
    }


def resolve_format(fmt: LogFormat, stream: TextIO) -> Literal["console", "json"]:
    """`auto` means console for a person at a terminal, JSON for everything else."""
    if fmt != "auto":
        return fmt
    return "console" if stream.isatty() else "json"


def configure(
    fmt: LogFormat = "auto", *, verbose: bool = False, stream: TextIO | None = None, drop: Collection[str] = ()
) -> None:
    """Configure structlog for the whole process; logs go to stderr, results to stdout.

    `drop`: events not to print (what a live display already shows).
    """
    out = stream if stream is not None else sys.stderr
    chosen = resolve_format(fmt, out)
    renderer: Any
    if chosen == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty(), pad_event_to=24)
    dropped = frozenset(drop)

    def without_dropped(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if event_dict.get("event") in dropped:
            raise structlog.DropEvent
        return event_dict

    processors: list[Any] = [
        without_dropped,
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # Tracebacks become plain data before redaction, so they are scrubbed too.
    processors.append(
        structlog.processors.dict_tracebacks if chosen == "json" else structlog.processors.format_exc_info
    )
    processors += [redact, renderer]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG if verbose else logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def get(name: str | None = None) -> Any:
    """A lazy logger; `name` becomes the `component` field.

    Lazy matters: modules create loggers at import time, before the CLI has
    chosen the format, and a logger bound then would keep the defaults.
    """
    return structlog.get_logger(component=name) if name else structlog.get_logger()
