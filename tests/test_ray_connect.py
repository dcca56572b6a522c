"""An unreachable Ray cluster, or a port that answers but is not Ray, is a clear error in seconds
that says what to check, raised before a sweep is stored (Ray's own retries took ~25 s and ended
in a raw ConnectionError)."""

from __future__ import annotations

import http.server
import socket
import threading
import time

import pytest

from helpers import TEACHER_SPEC
from kd_core.cli import main
from kd_core.errors import KDError
from kd_core.store import Store
from kd_core.sweep.ray_executor import _host_port, check_ray_address, check_ray_gcs
from kd_core.train.checkpoint import save_checkpoint
from kd_core.train.models import build_model


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


@pytest.fixture
def http_port():
    """A local HTTP server: a port that accepts connections but speaks no Ray."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "address, target",
    [
        ("10.0.0.5:6379", ("10.0.0.5", 6379)),
        ("ray://head:10001", ("head", 10001)),
        ("auto", None),
        ("[::1]:6379", ("::1", 6379)),
    ],
)
def test_addresses_are_read_as_host_and_port(address, target):
    assert _host_port(address) == target


def test_an_address_without_a_valid_port_is_refused():
    with pytest.raises(KDError, match="no valid port"):
        _host_port("head:sixty")


def test_a_closed_port_is_refused_in_seconds_with_what_to_check():
    port = closed_port()
    started = time.perf_counter()
    with pytest.raises(KDError) as err:
        check_ray_address(f"127.0.0.1:{port}")
    assert time.perf_counter() - started < 4
    text = str(err.value)
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in text and "ray start --head" in text


@pytest.mark.slow
def test_a_port_that_is_not_ray_is_refused_in_seconds(http_port):
    pytest.importorskip("ray", reason="the GCS check uses Ray's own client")
    address = f"127.0.0.1:{http_port}"
    check_ray_address(address)  # it does accept connections
    started = time.perf_counter()
    with pytest.raises(KDError, match="answers, but not as a Ray cluster") as err:
        check_ray_gcs(address, timeout=3)
    assert time.perf_counter() - started < 5
    assert "authentication token" in str(err.value)


def test_the_sweep_command_refuses_before_storing_anything(tmp_path, digits, capsys):
    teacher = tmp_path / "t.pt"
    save_checkpoint(
        teacher, build_model(TEACHER_SPEC, (1, 8, 8), 10), TEACHER_SPEC, (1, 8, 8), digits.classes, "digits"
    )
    args = ["sweep", "--teacher", str(teacher), "--backend", "ray", "--ray-address", f"127.0.0.1:{closed_port()}"]
    started = time.perf_counter()
    code = main([*args, "--epochs", "1", "--quiet", "--store", str(tmp_path / "store")])
    err = capsys.readouterr().err
    assert code == 2 and time.perf_counter() - started < 10
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: cannot reach the Ray cluster")
    assert not (tmp_path / "store").exists() or Store(tmp_path / "store").list_sweeps() == []
