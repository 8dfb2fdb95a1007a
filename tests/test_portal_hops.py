"""The portal's hop: how a job runs in the loop, how a Ctrl-C stops it, how trio reuses workers.

On asyncio (and uvloop) a job runs in its task with no cancel scope, and a Ctrl-C cancels the
task itself, again and again until it ends (what a level-triggered scope did); on trio parked
worker tasks take the jobs. These tests pin the behaviour those shortcuts must keep.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import threading

import anyio
import pytest

from duonet import _portal

BACKENDS = ["asyncio", "trio"]
try:
    import uvloop  # noqa: F401

    BACKENDS.append("uvloop")
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(params=BACKENDS)
def portal(request: pytest.FixtureRequest) -> object:
    _portal.reset()
    _portal.configure(str(request.param))
    yield request.param
    _portal.reset()
    _portal.configure(None)


async def fail(message: str) -> None:
    raise ValueError(message)


def test_results_and_errors_come_back(portal: str) -> None:
    for i in range(50):
        assert _portal.call(anyio.sleep, 0) is None
        with pytest.raises(ValueError, match=f"bad {i}"):
            _portal.call(fail, f"bad {i}")
    assert _portal.call(echo, 7) == 7


async def echo(value: object) -> object:
    return value


def test_many_threads_at_once(portal: str) -> None:
    # More calls in flight than trio keeps parked workers: every one completes, and the next
    # calls still work.
    results: list[object] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(3):
                results.append(_portal.call(anyio.sleep, 0.01))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(_portal._TRIO_IDLE_MAX + 20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert len(results) == 3 * len(threads)
    assert _portal.call(anyio.sleep, 0) is None


STUBBORN = """
import os, signal, threading, time
import anyio
from duonet import _portal

signal.signal(signal.SIGINT, signal.default_int_handler)

async def stubborn():
    try:
        await anyio.sleep(30)
    except BaseException:
        pass  # swallows the first cancellation (as a deadline scope may take it as its own)
    await anyio.sleep(30)
    return "not interrupted"

_portal.call(anyio.sleep, 0)  # the portal runs
timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
timer.start()
start = time.monotonic()
try:
    result = _portal.call(stubborn)
except KeyboardInterrupt:
    result = "KeyboardInterrupt"
timer.join()
print(result, round(time.monotonic() - start, 1), flush=True)
async def echo(text):
    return text

print(_portal.call(echo, "still serving"), flush=True)
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_ctrl_c_stops_a_job_that_swallows_one_cancellation(backend: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(STUBBORN)],
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(os.environ, DUONET_BACKEND=backend),
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    outcome, elapsed = lines[0].split()
    assert outcome == "KeyboardInterrupt"
    assert float(elapsed) < 3  # prompt: cancelled again after the swallowed cancellation
    assert lines[1] == "still serving"


def test_reset_stops_the_loop_with_its_parked_workers(portal: str) -> None:
    # Workers parked between jobs (trio) end with the loop: reset() leaves no thread behind.
    threads = [threading.Thread(target=_portal.call, args=(anyio.sleep, 0.05)) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert _portal.call(echo, "ok") == "ok"
    portal_thread = next(t for t in threading.enumerate() if t.name == "duonet-portal")
    _portal.reset()
    portal_thread.join(5)
    assert not portal_thread.is_alive()


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "trio"])
def test_without_an_eventfd_the_loop_is_woken_its_own_way(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Where there is no eventfd (not Linux), jobs go through call_soon_threadsafe.
    monkeypatch.setattr(_portal, "_eventfd", lambda: -1)
    _portal.reset()
    _portal.configure(backend)
    try:
        test_results_and_errors_come_back(backend)
        test_many_threads_at_once(backend)
    finally:
        _portal.reset()
        _portal.configure(None)


def test_a_stopped_portal_refuses_jobs(portal: str) -> None:
    # After stop, a late call fails cleanly (the eventfd, closed, is never written to again).
    assert _portal.call(echo, 1) == 1
    stopped = _portal._get()
    stopped.stop()
    with pytest.raises(RuntimeError, match="not running"):
        stopped.call(echo, (2,), None)
    _portal.reset()
    assert _portal.call(echo, 3) == 3  # a new portal


_DAEMON_AT_EXIT = textwrap.dedent(
    """
    import socket, sys, threading, time
    import duonet

    duonet.configure(backend=sys.argv[1])
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there: each dial is a quick hop that fails

    def loop():
        while True:
            try:
                duonet.dial("127.0.0.1", port, timeout=1)
            except OSError:
                pass

    threading.Thread(target=loop, daemon=True).start()
    time.sleep(0.1)  # then exit while the daemon thread keeps calling
    """
)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_daemon_thread_calling_at_interpreter_exit_prints_nothing(backend: str) -> None:
    # A daemon thread that makes a blocking call after the portal stopped at exit blocks until
    # the interpreter ends it, as the callers of jobs in flight do: no traceback on stderr.
    for _ in range(10):  # (the stopped-portal window is short: try it a few times)
        done = subprocess.run(
            [sys.executable, "-c", _DAEMON_AT_EXIT, backend],
            capture_output=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        assert done.stderr == b"", done.stderr.decode(errors="replace")


_AT_FD_LIMIT = textwrap.dedent(
    """
    import os, resource, socket, sys
    import duonet
    from duonet import _portal

    backend, free = sys.argv[1], int(sys.argv[2])
    duonet.configure(backend=backend)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    duonet.new_socket().close()  # duonet's own modules are imported by now (lazily, on use)
    assert _portal._portal is None  # (that needed no portal)
    in_use = len(os.listdir("/proc/self/fd")) - 1  # (the listing's own descriptor closes)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + free, hard))
    try:
        with duonet.dial("127.0.0.1", port, timeout=10):
            print("started")
    except OSError as exc:
        print("refused", exc.errno, exc)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    with duonet.dial("127.0.0.1", port, timeout=10):  # the portal starts once there is room
        print("then started")
    """
)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
@pytest.mark.parametrize("backend", BACKENDS)
def test_first_call_at_the_descriptor_limit_fails_cleanly(backend: str) -> None:
    # libuv aborts the process when its loop cannot open its descriptors, and a half-built
    # asyncio loop prints a traceback: the portal checks there is room first, and the call
    # raises EMFILE like any other (the next call starts the portal). With one descriptor
    # more than the loop needs (the dialled socket's), it starts: the counts are not too low.
    need = _portal._LOOP_FDS[backend]
    for free, expected in ((0, "refused"), (need - 1, "refused"), (need + 1, "started")):
        done = subprocess.run(
            [sys.executable, "-c", _AT_FD_LIMIT, backend, str(free)],
            capture_output=True,
            timeout=60,
        )
        out, err = done.stdout.decode(), done.stderr.decode(errors="replace")
        assert done.returncode == 0, (free, done.returncode, out, err)
        assert err == "", (free, err)
        first, then = out.splitlines()
        assert first.startswith(expected), (free, out)
        if expected == "refused":
            assert first.startswith(f"refused {errno.EMFILE} ")
            assert f"could not start its {backend} event loop" in first
        assert then == "then started"


def test_the_descriptor_check_needs_no_dev_null(
    portal: str, monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]
) -> None:
    # Counting free descriptors opens os.devnull; where that fails for another reason than
    # the limit (no /dev/null in a bare container), the portal starts all the same.
    monkeypatch.setattr(os, "devnull", os.path.join(tmp_path, "missing"))
    _portal.reset()
    assert _portal.call(echo, 5) == 5
