"""Database and broker outages: the API degrades to 503 with Retry-After (instant predictions keep
working), answers within a bound instead of hanging, and the SAME app recovers on its own once the
service is back.

Outages are made with a TCP relay in front of the real PostgreSQL and Redis, which the test can
switch between relaying, refusing (a stopped server: connections are reset) and black-holing
(a hung server or a firewall dropping packets: connections are accepted and never answered).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal
from urllib.parse import urlsplit

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from app.core.config import Settings
from app.jobs.kinds import queue_name
from app.main import create_app

REDIS_DB = 9  # test_celery_scaleout uses 7 and test_soak 8
OUTAGE_ANSWER_S = 5.0  # about 3 s by design (see celery_worker), with room for a loaded machine
DB_OUTAGE_ANSWER_S = 8.0  # PostgreSQL's connect_timeout is 5 s; a black hole waits that out
JOB_S = 120.0

Mode = Literal["up", "refuse", "blackhole"]


class Relay:
    """127.0.0.1:<free port> -> `target`, breakable on demand.

    `down("refuse")` cuts every relayed connection and resets new ones at once;
    `down("blackhole")` cuts them and accepts new ones without ever answering; `up()` relays
    again (and drops the black-holed ones, as a recovered server would have).
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._mode: Mode = "up"
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = threading.Event()
        self._acceptor = threading.Thread(target=self._accept_loop, name="relay", daemon=True)
        self._acceptor.start()

    def up(self) -> None:
        self._switch("up")

    def down(self, mode: Literal["refuse", "blackhole"]) -> None:
        self._switch(mode)

    def close(self) -> None:
        self._closed.set()
        self._acceptor.join(timeout=5)
        self._listener.close()
        self._switch("refuse")

    def _switch(self, mode: Mode) -> None:
        with self._lock:
            self._mode = mode
            cut, self._open = self._open, set()
        for sock in cut:
            _reset(sock)

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                mode = self._mode
                if mode == "blackhole":
                    self._open.add(client)
            if mode == "refuse":
                _reset(client)
            elif mode == "up":
                self._relay(client)

    def _relay(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _reset(client)
            return
        upstream.settimeout(None)
        with self._lock:
            if self._mode != "up":  # switched while connecting
                _reset(client)
                _reset(upstream)
                return
            self._open.update((client, upstream))
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    for sock in (source, sink):
        _reset(sock)


def _reset(sock: socket.socket) -> None:
    """Close with an RST, as a crashed peer does; shutdown first wakes a thread blocked in
    recv on it."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


@pytest.fixture
def relays() -> Iterator[Callable[[int, str], Relay]]:
    """`relays(port, host)`: a Relay to host:`port`, closed after the test."""
    opened: list[Relay] = []

    def open_relay(port: int, host: str) -> Relay:
        opened.append(Relay(port, host))
        return opened[-1]

    yield open_relay
    for relay in opened:
        relay.close()


@contextmanager
def running(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings)
    with TestClient(app) as client:
        assert app.state.service.ready.wait(60), "models did not load in time"
        yield client


def answered_within(
    seconds: float, call: Callable[[], httpx.Response], relay: Relay, what: str
) -> httpx.Response:
    """`call()`, failing if it takes over `seconds`. It runs on a thread so that a hang (the
    regression this guards against) fails the test quickly: the relay is brought back up, which
    frees the stuck request, instead of stalling the suite."""
    outcome: dict[str, httpx.Response | BaseException] = {}

    def target() -> None:
        try:
            outcome["response"] = call()
        except BaseException as exc:
            outcome["error"] = exc

    started = time.monotonic()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    took = time.monotonic() - started
    if thread.is_alive():
        relay.up()
        thread.join(30)
        pytest.fail(f"{what}: no answer after {seconds} s while the service was down")
    if "error" in outcome:
        raise outcome["error"]
    response = outcome["response"]
    assert isinstance(response, httpx.Response)
    assert took < seconds, f"{what} took {took:.1f} s"
    return response


def predict_ok(client: TestClient, helpers) -> None:
    response = client.post(
        "/model/predict",
        params={"style": "crimson-fire", "format": "png"},
        files={"image": ("photo.png", helpers.png(48, 32), "image/png")},
    )
    assert response.status_code == 200, response.text


# --- database -----------------------------------------------------------------------------


def finished_job(client: TestClient, helpers, job_id: str) -> dict:
    """Poll a job until it succeeds or fails (bounded by JOB_S) and return its resource."""

    def final() -> dict | None:
        body = client.get(f"/jobs/{job_id}").json()
        return body if body["state"] in ("succeeded", "failed") else None

    return helpers.wait_for(final, JOB_S, f"job {job_id} to finish")


@pytest.mark.parametrize("mode", ["refuse", "blackhole"])
def test_database_outage_is_503_and_the_same_app_recovers(
    mode: Literal["refuse", "blackhole"],
    app_settings: Callable[..., Settings],
    postgres_schema_url: str,
    relays: Callable[[int, str], Relay],
    helpers,
) -> None:
    url = make_url(postgres_schema_url)
    relay = relays(url.port or 5432, url.host or "127.0.0.1")
    relayed = url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
    content, style = helpers.png(64, 48, seed=1), helpers.png(64, 64, seed=2)

    with running(app_settings(database_url=relayed)) as client:
        before = helpers.submit(client, content, style)
        assert before.status_code == 202, before.text
        first = before.json()["id"]
        helpers.wait_for(
            lambda: client.get(f"/jobs/{first}").json()["state"] == "succeeded",
            JOB_S,
            "the job before the outage",
        )

        # A restart the app did not see (no request in between): every pooled connection is
        # dead, yet the next request must not be the one to find out.
        relay.down("refuse")
        relay.up()
        assert client.get(f"/jobs/{first}").status_code == 200

        relay.down(mode)
        requests: dict[str, Callable[[], httpx.Response]] = {
            "list": lambda: client.get("/jobs"),
            "get": lambda: client.get(f"/jobs/{first}"),
            "result": lambda: client.get(f"/jobs/{first}/result"),
            "cancel": lambda: client.delete(f"/jobs/{first}"),
            "submit": lambda: helpers.submit(client, content, style),
        }
        if mode == "blackhole":  # each waits out connect_timeout; the routes share one path
            requests = {name: requests[name] for name in ("list", "submit")}
        for name, call in requests.items():
            response = answered_within(DB_OUTAGE_ANSWER_S, call, relay, name)
            body = helpers.problem(response, 503, "database_unavailable")
            assert int(response.headers["retry-after"]) > 0, name
            assert "retry" in str(body["detail"]), name
        predict_ok(client, helpers)
        assert client.get("/health/live").status_code == 200

        relay.up()
        # No grace period: the pool replaces its cut connections on the very next request.
        listed = client.get("/jobs")
        assert listed.status_code == 200, listed.text
        assert [item["id"] for item in listed.json()["items"]] == [first]
        after = helpers.submit(client, content, style)
        assert after.status_code == 202, after.text
        done = finished_job(client, helpers, after.json()["id"])
        assert done["state"] == "succeeded", done["error"]
        assert client.get(f"/jobs/{after.json()['id']}/result").status_code == 200


def test_a_database_down_at_start_up_is_used_once_it_is_back(
    app_settings: Callable[..., Settings],
    postgres_schema_url: str,
    relays: Callable[[int, str], Relay],
    helpers,
) -> None:
    url = make_url(postgres_schema_url)
    relay = relays(url.port or 5432, url.host or "127.0.0.1")
    relay.down("refuse")
    relayed = url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)

    with running(app_settings(database_url=relayed)) as client:
        helpers.problem(client.get("/jobs"), 503, "database_unavailable")
        predict_ok(client, helpers)

        relay.up()
        # The tables did not exist when the app started; the first request after creates them.
        listed = client.get("/jobs")
        assert listed.status_code == 200, listed.text
        assert listed.json()["total"] == 0
        job = helpers.submit(client, helpers.png(64, 48), helpers.png(64, 64, seed=2)).json()
        done = finished_job(client, helpers, job["id"])
        assert done["state"] == "succeeded", done["error"]


def relayed_database(
    postgres_schema_url: str, relays: Callable[[int, str], Relay]
) -> tuple[str, Relay]:
    """The test schema's URL through a fresh relay, and that relay."""
    url = make_url(postgres_schema_url)
    relay = relays(url.port or 5432, url.host or "127.0.0.1")
    relayed = url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
    return relayed, relay


def register_style(client: TestClient, helpers, name: str) -> httpx.Response:
    painting = {"image": ("painting.png", helpers.png(64, 64, seed=5), "image/png")}
    return client.post("/model/styles", files=painting, data={"name": name})


def predict_with(client: TestClient, helpers, style: str) -> httpx.Response:
    return client.post(
        "/model/predict",
        params={"style": style, "max_size": "32"},
        files={"image": ("photo.png", helpers.png(48, 32), "image/png")},
    )


def test_user_style_routes_are_503_while_the_database_is_down(
    app_settings: Callable[..., Settings],
    postgres_schema_url: str,
    relays: Callable[[int, str], Relay],
    helpers,
) -> None:
    relayed, relay = relayed_database(postgres_schema_url, relays)
    with running(app_settings(database_url=relayed)) as client:
        assert register_style(client, helpers, "outage-kept").status_code == 201

        relay.down("refuse")
        requests: dict[str, Callable[[], httpx.Response]] = {
            "list": lambda: client.get("/model/styles"),
            "register": lambda: register_style(client, helpers, "outage-new"),
            "delete": lambda: client.delete("/model/styles/outage-kept"),
            "thumbnail": lambda: client.get("/model/styles/outage-kept/thumbnail"),
            "predict": lambda: predict_with(client, helpers, "outage-kept"),
        }
        for name, call in requests.items():
            response = answered_within(DB_OUTAGE_ANSWER_S, call, relay, name)
            helpers.problem(response, 503, "database_unavailable")
            assert int(response.headers["retry-after"]) > 0, name
        predict_ok(client, helpers)  # catalog styles need no database
        assert client.get("/model/styles/crimson-fire/thumbnail").status_code == 200

        relay.up()
        names = [style["name"] for style in client.get("/model/styles").json()["styles"]]
        assert "outage-kept" in names and "outage-new" not in names
        assert predict_with(client, helpers, "outage-kept").status_code == 200
        assert client.delete("/model/styles/outage-kept").status_code == 204


def test_user_styles_work_once_a_database_down_at_start_up_is_back(
    app_settings: Callable[..., Settings],
    postgres_schema_url: str,
    relays: Callable[[int, str], Relay],
    helpers,
) -> None:
    relayed, relay = relayed_database(postgres_schema_url, relays)
    relay.down("refuse")
    with running(app_settings(database_url=relayed)) as client:
        helpers.problem(client.get("/model/styles"), 503, "database_unavailable")
        helpers.problem(register_style(client, helpers, "late"), 503, "database_unavailable")

        relay.up()
        # The tables never existed: the first use after the outage creates them.
        created = register_style(client, helpers, "late")
        assert created.status_code == 201, created.text
        assert predict_with(client, helpers, "late").status_code == 200
        thumbnail = client.get("/model/styles/late/thumbnail")
        assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"


# --- broker -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["refuse", "blackhole"])
def test_broker_outage_is_503_and_the_same_app_recovers(
    mode: Literal["refuse", "blackhole"],
    app_settings: Callable[..., Settings],
    private_redis: Callable[[int], str],
    relays: Callable[[int, str], Relay],
    helpers,
) -> None:
    direct = private_redis(REDIS_DB)
    parts = urlsplit(direct)
    relay = relays(parts.port or 6379, parts.hostname or "127.0.0.1")
    broker = f"redis://127.0.0.1:{relay.port}/{REDIS_DB}"
    content, style = helpers.png(64, 48, seed=1), helpers.png(64, 64, seed=2)
    settings = app_settings(broker_url=broker, embedded_worker=False)

    with redis.Redis.from_url(direct, socket_timeout=5) as queue, running(settings) as client:
        assert client.app.state.jobs.runners == []
        first = helpers.submit(client, content, style)
        assert first.status_code == 202, first.text
        assert queue.llen(queue_name("gatys")) == 1

        relay.down(mode)
        for attempt in range(2):  # the first finds its pooled connection cut, the second none
            response = answered_within(
                OUTAGE_ANSWER_S,
                lambda: helpers.submit(client, content, style),
                relay,
                f"submit {attempt}",
            )
            helpers.problem(response, 503, "broker_unavailable")
            assert int(response.headers["retry-after"]) > 0
        assert queue.llen(queue_name("gatys")) == 1
        # A job the broker never got must not linger as queued: it failed, and says why.
        failed = client.get("/jobs", params={"state": "failed"}).json()
        assert failed["total"] == 2
        assert all("broker unavailable" in item["error"] for item in failed["items"])
        assert client.get(f"/jobs/{first.json()['id']}").json()["state"] == "queued"
        predict_ok(client, helpers)

        relay.up()
        # No grace period: the producer reconnects on the very next publish.
        recovered = helpers.submit(client, content, style)
        assert recovered.status_code == 202, recovered.text
        assert recovered.json()["state"] == "queued"
        assert queue.llen(queue_name("gatys")) == 2, "the recovered submit never reached Redis"
