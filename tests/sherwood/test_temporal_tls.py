"""The Temporal client's TLS comes from SHERWOOD_TEMPORAL_TLS_* (sherwood/temporal.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.service import TLSConfig

from sherwood.settings import Settings
from sherwood.temporal import connect, tls_config


def test_plaintext_unless_asked() -> None:
    assert tls_config(Settings(_env_file=None)) is False  # type: ignore[call-arg]


def test_mtls_from_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("client.pem", "client.key", "ca.pem"):
        (tmp_path / name).write_bytes(f"-- {name} --".encode())
    monkeypatch.setenv("SHERWOOD_TEMPORAL_TLS_CLIENT_CERT", str(tmp_path / "client.pem"))
    monkeypatch.setenv("SHERWOOD_TEMPORAL_TLS_CLIENT_KEY", str(tmp_path / "client.key"))
    monkeypatch.setenv("SHERWOOD_TEMPORAL_TLS_SERVER_CA", str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SHERWOOD_TEMPORAL_TLS_SERVER_NAME", "temporal.internal")
    tls = tls_config(Settings())
    assert tls == TLSConfig(server_root_ca_cert=b"-- ca.pem --", domain="temporal.internal",
                            client_cert=b"-- client.pem --", client_private_key=b"-- client.key --")


def test_temporal_cloud_is_tls_with_system_roots() -> None:
    assert tls_config(Settings(temporal_tls=True)) == TLSConfig()


def test_a_cert_without_its_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("x")
    with pytest.raises(ValueError, match="go together"):
        tls_config(Settings(temporal_tls_client_cert=tmp_path / "c.pem"))


async def test_connect_uses_it(tmp_path: Path) -> None:
    """connect() passes the TLS config to the client: a lazy client keeps it in its config."""
    s = Settings(temporal_address="127.0.0.1:1", temporal_tls=True,
                 temporal_tls_server_name="temporal.internal")
    client = await connect(s, lazy=True)
    assert client.service_client.config.tls == TLSConfig(domain="temporal.internal")
