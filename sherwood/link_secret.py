"""The execution gateway's direct-link secret (``SHERWOOD_GATEWAY_LINK_SECRET``): where it comes
from, and whether a process may run the link without one.

    ensure_link_secret(data_dir) -> str      ``sherwood dev``: <data_dir>/link.secret, made once
    link_secret(settings) -> str | None      the secret to use; None: run without the link
    LinkSecretError                          a missing or unusable secret where one is required

What it does not do: the challenge-response itself (``activities.gateway_link``), or rotate a
secret (docs/operations.md, "Rotating the link secret").
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

from sherwood.settings import Settings

log = logging.getLogger(__name__)

SECRET_FILE = "link.secret"
MIN_SECRET_CHARS = 32  # what a secret must at least have; ensure_link_secret makes 64 (32 bytes)


class LinkSecretError(RuntimeError):
    """The link cannot start: no secret in production, or a secret that is not one."""


def check_secret(secret: str) -> str:
    """``secret`` stripped, or :class:`LinkSecretError` when it is too short to be one."""
    secret = secret.strip()
    if len(secret) < MIN_SECRET_CHARS:
        raise LinkSecretError(f"SHERWOOD_GATEWAY_LINK_SECRET must have at least {MIN_SECRET_CHARS} "
                              f"characters (e.g. `python -c 'import secrets; "
                              f"print(secrets.token_hex(32))'`)")
    return secret


def ensure_link_secret(data_dir: Path) -> str:
    """The secret in ``<data_dir>/link.secret``, created first if absent: 32 random bytes, hex,
    in a file only its owner can read (0600). Two processes creating it at once agree (the file
    appears whole, once). A file others may read or write is refused, not used."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / SECRET_FILE
    if not path.exists():
        tmp = data_dir / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
            try:
                os.link(tmp, path)  # atomic create-if-absent: never a half-written secret
            except FileExistsError:
                pass  # another process made it first: use theirs
        finally:
            tmp.unlink(missing_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise LinkSecretError(f"{path} may be read or written by others (mode {mode:o}): "
                              f"`chmod 600 {path}` or delete it to have a new one made")
    return check_secret(path.read_text())


def link_secret(settings: Settings) -> str | None:
    """The link secret this process uses (gateway and shard workers alike). With none
    configured: in production (``SHERWOOD_ENV`` unset or ``production``) :class:`LinkSecretError`
    -- the process refuses to start rather than run an unauthenticated link; in ``dev``/``test``
    None, and the caller runs without the link (orders take the gateway's Temporal activity).
    The link is never served or used without authentication."""
    if settings.gateway_link_secret is not None and settings.gateway_link_secret.get_secret_value():
        return check_secret(settings.gateway_link_secret.get_secret_value())
    if settings.env == "production":
        raise LinkSecretError(
            "the gateway's direct link needs SHERWOOD_GATEWAY_LINK_SECRET, the same on the gateway "
            "and every shard worker (see docs/operations.md); SHERWOOD_ENV=dev runs without the "
            "link instead")
    log.warning("SHERWOOD_GATEWAY_LINK_SECRET is not set (SHERWOOD_ENV=%s): the gateway's direct "
                "link is off, orders go through the gateway's Temporal activity", settings.env)
    return None
