"""The harness's own Toxiproxy client against a real Toxiproxy server: every toxic type through the
whole API round trip, errors as exceptions, and bounded waits when the server is gone or wedged."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from harness.cluster import Cluster
from harness.services.base import free_port
from harness.toxiproxy import TOXIC_TYPES, Toxiproxy, ToxiproxyError

# type -> (attributes to add with, one attribute to update to)
TOXICS = {
    "latency": ({"latency": 100, "jitter": 10}, {"latency": 250}),
    "bandwidth": ({"rate": 64}, {"rate": 128}),
    "slow_close": ({"delay": 100}, {"delay": 300}),
    "timeout": ({"timeout": 0}, {"timeout": 500}),
    "reset_peer": ({"timeout": 0}, {"timeout": 200}),
    "slicer": ({"average_size": 16, "size_variation": 4, "delay": 10}, {"average_size": 32}),
    "limit_data": ({"bytes": 1000}, {"bytes": 2000}),
}


@pytest.fixture
def proxy(cluster: Cluster) -> Iterator[tuple[Toxiproxy, str, int]]:
    """A private proxy to the session cluster's Redis, deleted afterwards."""
    tp = cluster.toxiproxy
    name, port = f"tptest-{uuid.uuid4().hex[:8]}", free_port()
    tp.create_proxy(name, f"127.0.0.1:{port}", cluster.direct["redis"])
    try:
        yield tp, name, port
    finally:
        tp.delete_proxy(name)


def test_toxic_table_covers_every_type() -> None:
    assert set(TOXICS) == set(TOXIC_TYPES)


@pytest.mark.parametrize("kind", TOXIC_TYPES)
@pytest.mark.parametrize("stream", ["downstream", "upstream"])
def test_every_toxic_add_list_update_remove(proxy: tuple[Toxiproxy, str, int], kind: str, stream: str) -> None:
    tp, name, _ = proxy
    attrs, update = TOXICS[kind]
    made = tp.add_toxic(name, kind, stream=stream, **attrs)
    assert made["name"] == f"{kind}_{stream}" and made["type"] == kind and made["stream"] == stream
    assert made["toxicity"] == 1
    for k, v in attrs.items():
        assert made["attributes"][k] == v
    listed = tp.toxics(name)
    assert [t["name"] for t in listed] == [made["name"]]
    assert tp.get_proxy(name)["toxics"][0]["attributes"] == made["attributes"]
    updated = tp.update_toxic(name, made["name"], **update)
    for k, v in update.items():
        assert updated["attributes"][k] == v
    assert tp.toxics(name)[0]["attributes"] == updated["attributes"]
    tp.remove_toxic(name, made["name"])
    assert tp.toxics(name) == []


def test_convenience_wrappers_and_reset(proxy: tuple[Toxiproxy, str, int]) -> None:
    tp, name, _ = proxy
    tp.latency(name, 50, jitter_ms=5)
    tp.bandwidth(name, 100, stream="upstream")
    tp.slow_close(name, 10, name="sc")
    tp.timeout(name, 1000, name="to")
    tp.reset_peer(name, 1000, name="rp")
    tp.slicer(name, 64, size_variation=8, delay_us=5, name="sl")
    tp.limit_data(name, 4096, name="ld")
    assert {t["type"] for t in tp.toxics(name)} == set(TOXIC_TYPES)
    tp.set_enabled(name, False)
    tp.reset()  # the heal: every proxy enabled, every toxic gone
    assert tp.get_proxy(name)["enabled"] is True
    assert tp.toxics(name) == []


def test_reset_peer_and_limit_data_cut_connections(proxy: tuple[Toxiproxy, str, int]) -> None:
    tp, name, port = proxy
    r = redis.Redis(port=port, socket_timeout=3)
    r.set("big", "x" * 5000)
    tp.limit_data(name, 1000)  # the 5 kB reply cannot get through
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=port, socket_timeout=3).get("big")
    tp.remove_toxic(name, "limit_data_downstream")
    tp.reset_peer(name, 0, stream="upstream")
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=port, socket_timeout=3).ping()
    tp.remove_toxic(name, "reset_peer_upstream")
    assert redis.Redis(port=port, socket_timeout=3).get("big") == b"x" * 5000


def test_non_2xx_raises(proxy: tuple[Toxiproxy, str, int]) -> None:
    tp, name, port = proxy
    with pytest.raises(ToxiproxyError, match="HTTP 404"):
        tp.get_proxy("no-such-proxy")
    with pytest.raises(ToxiproxyError, match="HTTP 409"):
        tp.create_proxy(name, f"127.0.0.1:{port}", "127.0.0.1:1")
    with pytest.raises(ToxiproxyError, match="HTTP 404"):
        tp.remove_toxic(name, "no-such-toxic")
    with pytest.raises(ToxiproxyError, match="HTTP 404"):
        tp.latency("no-such-proxy", 10)
    tp.latency(name, 10)
    with pytest.raises(ToxiproxyError, match="HTTP 409"):
        tp.latency(name, 20)  # same name twice
    with pytest.raises(ToxiproxyError, match="HTTP 4"):
        tp.add_toxic(name, "latency", name="bad", latency="soon")  # wrong attribute type
    # refused before any request
    with pytest.raises(ToxiproxyError, match="unknown toxic type"):
        tp.add_toxic(name, "partition")
    with pytest.raises(ToxiproxyError, match="unknown toxic stream"):
        tp.add_toxic(name, "latency", stream="sideways")
    with pytest.raises(ToxiproxyError, match="127.0.0.1"):
        tp.create_proxy("public", f"0.0.0.0:{free_port()}", "127.0.0.1:1")


def test_unreachable_toxiproxy_raises_at_once() -> None:
    tp = Toxiproxy("127.0.0.1", free_port(), timeout=5)  # nothing listens there
    for call in (tp.version, tp.proxies, tp.reset):
        t = time.monotonic()
        with pytest.raises(ToxiproxyError, match="refused"):
            call()
        assert time.monotonic() - t < 2.5  # vs the 5 s HTTP timeout


def test_wedged_toxiproxy_times_out_instead_of_hanging() -> None:
    """A server that accepts the connection and never answers (e.g. a SIGSTOPped toxiproxy: the
    kernel completes the handshake from the backlog) costs one HTTP timeout, not a hung run."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)  # never accept(), never answer
        tp = Toxiproxy("127.0.0.1", srv.getsockname()[1], timeout=0.5)
        for call in (tp.version, tp.reset, lambda: tp.latency("redis", 10)):
            t = time.monotonic()
            with pytest.raises(ToxiproxyError):
                call()
            assert 0.4 < time.monotonic() - t < 4.5


def test_paused_toxiproxy_server_times_out(cluster: Cluster) -> None:
    svc = cluster.service("toxiproxy")
    tp = Toxiproxy(*cluster.toxiproxy_service.endpoint.split(":"), timeout=0.5)  # type: ignore[union-attr]
    svc.pause()
    try:
        t = time.monotonic()
        with pytest.raises(ToxiproxyError, match="timed out"):
            tp.proxies()
        assert time.monotonic() - t < 4.5
    finally:
        svc.resume()
    assert "redis" in tp.proxies()
