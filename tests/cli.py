"""Running ``sherwood`` commands inside the test process, as a subprocess would run them.

A ``python -m sherwood`` subprocess costs a second or more of interpreter start-up and imports
(seven under a loaded CI machine) before the command does anything; a test that checks a dozen
commands spent most of its time there. :func:`sherwood_in_process` runs the same typer app
(:data:`sherwood.cli.app`) with the same arguments and the same environment, in a worker thread
(the commands run their own event loop, :func:`sherwood.cli_common.run`), and returns what a
subprocess would: the exit code, stdout and stderr.

The environment is given to the command's settings only: ``load_settings`` builds them from
``env`` exactly as pydantic-settings builds them from ``os.environ`` (same parsing of
``SHERWOOD_*``, lists and JSON included), and the process's own ``os.environ`` is never changed
(the stack under test runs in this process, its threads read it).

What it does not prove: the console script / ``python -m sherwood`` entry point
(:func:`sherwood.cli.main`: its exit status and the early exit of a ``sherwood dev`` child). Each
command family keeps at least one real subprocess in its tests for that.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Mapping
from contextvars import ContextVar
from unittest import mock

from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

from sherwood.settings import Settings

_ENVIRON: ContextVar[Mapping[str, str]] = ContextVar("sherwood_test_environ")


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source, reading the command's ``env`` instead of
    ``os.environ``."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(_ENVIRON.get(), self.case_sensitive, self.env_ignore_empty,
                              self.env_parse_none_str)


class _CommandSettings(Settings):
    """:class:`Settings` whose environment is the invoked command's ``env``."""

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _MappingEnvSource(settings_cls), dotenv_settings, file_secret_settings


def invoke(env: Mapping[str, str], *args: str) -> tuple[int, str, str]:
    """``sherwood ARGS`` with environment ``env``, in this thread: (exit code, stdout, stderr).
    An exception the command let out is exit 1 with its traceback on stderr (as the
    subprocess would print it)."""
    from typer.testing import CliRunner

    from sherwood.cli import app

    token = _ENVIRON.set(env)
    try:
        with mock.patch("sherwood.cli_common.Settings", _CommandSettings):
            result = CliRunner().invoke(app, list(args))
    finally:
        _ENVIRON.reset(token)
    err = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        err += "".join(traceback.format_exception(result.exception))
    return result.exit_code, result.stdout, err


async def sherwood_in_process(env: Mapping[str, str], *args: str) -> tuple[int, str, str]:
    """:func:`invoke` in a worker thread, so the event loop (and the stack under test on it)
    keeps running while the command does."""
    return await asyncio.to_thread(invoke, env, *args)
