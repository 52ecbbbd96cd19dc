"""Redis users per process kind: least privilege on the shared Redis.

:data:`USERS` is the plan (pure): for each kind of Redis user, the keys and pub/sub channels it
may touch (patterns under ``SHERWOOD_REDIS_PREFIX``, see :class:`sherwood.contracts.RedisKeys`)
and the commands it may run, each naming the code that needs them:

- ``quotes`` (the market-data fan-out, the simulated venues): reads the latest quotes and
  trades and the halted symbols, SUBSCRIBEs to the per-symbol channels; no write, no PUBLISH.
- ``ingest`` (market-data ingest): writes the latest quotes and trades, the feed's sequence
  numbers and counters and the halts it reads off the feed, PUBLISHes on the per-symbol
  channels and on the controls channel (a feed halt); nothing under any other key.
- ``service`` (the API, shard workers, gateway, back office): every key and channel under the
  prefix, every command but Redis's ``@dangerous`` ones (no FLUSHALL, KEYS, CONFIG, ACL, DEBUG,
  INFO, CLIENT ...).

:func:`acl_lines` renders the plan as ACL file lines (``user <name> on ><password> ...``).
``sherwood dev`` hands them to its embedded Redis at every start (on the server's standard
input, with ``requirepass`` for the ``default`` user, which only ``sherwood dev`` itself uses)
and gives each child the URL of its kind (:data:`PROCESS_USERS`). For a configured Redis, an
operator applies the lines ``sherwood redis-acl`` prints (docs/operations.md).

What it does not do: apply ACLs to a configured Redis (``sherwood dev`` and the processes use
the URLs they are given; the tests use the machine's Redis without users), or restrict Redis
versions older than 6.2 (channel patterns need 6.2; the rules here are 6.2-compatible, so
read-only is a matter of the commands allowed, not of ``%R~`` key patterns).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlsplit


@dataclass(frozen=True)
class RedisUser:
    """One kind of Redis user: ``keys`` and ``channels`` are patterns after ``<prefix>:``."""

    keys: tuple[str, ...]
    channels: tuple[str, ...]
    commands: tuple[str, ...]  # ACL command rules, applied after -@all


USERS: dict[str, RedisUser] = {
    "quotes": RedisUser(
        # marketdata/subscriber.py (the fan-out), simulators/quote_sources.py (the venues)
        keys=("quotes:latest", "trades:latest", "halts"),
        channels=("md:*", "mdb:*"),
        commands=("+ping", "+select", "+hget", "+hmget", "+hgetall", "+smembers", "+sismember",
                  "+subscribe", "+psubscribe", "+unsubscribe", "+punsubscribe"),
    ),
    "ingest": RedisUser(
        # marketdata/ingest.py: HSET latest quotes/trades and md:seq, HINCRBY md:dropped and
        # md:accepted, SADD/SREM halts, PUBLISH md:<symbol>, mdb:<k> (marketdata/batches.py) and
        # controls:events
        keys=("quotes:latest", "trades:latest", "md:*", "halts"),
        channels=("md:*", "mdb:*", "controls:events"),
        commands=("+ping", "+select", "+hset", "+hget", "+hmget", "+hgetall", "+hincrby",
                  "+sadd", "+srem", "+smembers", "+publish"),
    ),
    "service": RedisUser(
        # the API (rate limits, account shard cache, trade streams), the shard workers (outbox,
        # triggers), the gateway, the back office (the simulated bank), controls (db/controls.py).
        # A PSUBSCRIBE pattern must be allowed literally (``*`` does not cover it): the API's
        # wake-ups for requests waiting for an admission slot (api/admission.py)
        keys=("*",),
        channels=("*", "admission_freed:*"),
        commands=("+@all", "-@dangerous"),
    ),
}

# `sherwood dev`'s children -> the kind of Redis user they connect as (the rest: service)
PROCESS_USERS = {"ingest": "ingest", "fanout": "quotes", "mm1": "quotes", "mm2": "quotes",
                 "exchange-feed": "quotes"}


def user_name(prefix: str, kind: str) -> str:
    return f"{prefix}-{kind}"


def acl_rules(prefix: str, kind: str) -> str:
    """The ACL rules of ``kind`` for the keys and channels under ``prefix`` (pure)."""
    u = USERS[kind]
    return " ".join(["resetkeys", *[f"~{prefix}:{k}" for k in u.keys], "resetchannels",
                     *[f"&{prefix}:{c}" for c in u.channels], "-@all", *u.commands])


def check_password(password: str) -> str:
    if not password or any(c.isspace() or c in "\"'\\" for c in password):
        raise ValueError("a Redis password must be non-empty, without spaces, quotes or backslashes")
    return password


def acl_lines(prefix: str, passwords: dict[str, str]) -> list[str]:
    """ACL file lines for the users in ``passwords`` (kind -> password), in :data:`USERS` order.
    Each resets the user first, so applying them again makes the user exactly this."""
    return [f"user {user_name(prefix, kind)} reset on >{check_password(passwords[kind])} "
            f"{acl_rules(prefix, kind)}" for kind in USERS if kind in passwords]


def url_for(url: str, user: str, password: str) -> str:
    """``url`` (a Redis URL) with ``user`` and ``password`` in place of its credentials."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{quote(user, safe='')}:{quote(password, safe='')}@{host}").geturl()
