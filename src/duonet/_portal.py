"""The private portal: one background event loop that runs every blocking call's I/O.

Theory of operation
-------------------
The blocking ``Socket`` holds an ``AsyncSocket`` and must run its coroutines somewhere. anyio's
``BlockingPortal.call`` costs two blocking round trips, two ``concurrent.futures.Future`` s and a
task-group spawn per call (measured ~150-350 us on a 2-vCPU VM with anyio 4.x), so duonet
keeps its own, leaner one:

* one daemon thread ``duonet-portal`` per process, started lazily on the first call that needs it,
  running ``anyio.run`` on asyncio (uvloop when importable) or trio;
* a call is one hop: the caller hands a :class:`_Job` to the loop (on Linux's asyncio and uvloop
  through a queue and an eventfd, else ``loop.call_soon_threadsafe``; on trio
  ``TrioToken.run_sync_soon``), the loop runs it in a plain task
  (on trio under one cancel scope, what a Ctrl-C cancels; on asyncio a Ctrl-C cancels the task
  itself, so no scope is entered per call: see :meth:`_Job.run_asyncio`),
  and the result comes back through a ``_thread`` lock owned by the calling thread
  (pre-acquired, released by the job, re-used for the thread's next call);
* **KeyboardInterrupt** in a caller blocked on that lock cancels the job (its trio scope, or on
  asyncio its task, again every 50 ms until it ends), *waits for the job to unwind* (the core's
  reads are cancel-safe, so every received byte stays buffered), gives back a result that raced
  the cancel (``undo``), then re-raises: nothing is lost and the portal is never stuck;
* calling from inside a running event loop (or from the portal thread) raises ``RuntimeError``
  instead of deadlocking;
* after ``os.fork()`` the child gets a fresh portal on its first call; at interpreter exit the
  loop is stopped and the thread joined briefly (it is a daemon: it never keeps a program alive).

Nothing here knows about sockets.
"""

from __future__ import annotations

import _thread
import asyncio
import atexit
import collections
import errno
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import anyio

__all__ = ("call", "configure", "current_backend", "in_event_loop", "is_running", "reset")

T = TypeVar("T")

_ENV_BACKEND = "DUONET_BACKEND"
_BACKENDS = ("asyncio", "trio", "uvloop")


class _Job:
    """One blocking call in flight: the coroutine function, its outcome, and the caller's lock."""

    __slots__ = (
        "args",
        "cancelled",
        "error",
        "func",
        "lock",
        "running",
        "started",
        "stopper",
        "value",
    )

    def __init__(self, func: Callable[..., Awaitable[Any]], args: tuple[Any, ...], lock: Any):
        self.func = func
        self.args = args
        self.lock = lock
        self.value: Any = None
        self.error: BaseException | None = None
        self.stopper: Callable[[], object] | None = None  # cancels the running job
        self.started = False
        self.cancelled = False
        self.running: set[_Job] | None = None  # asyncio: the portal's jobs in flight

    async def run(self, scope_type: Callable[[], Any]) -> None:
        """In the loop thread (trio): run the call under one cancel scope (what a Ctrl-C
        cancels); ``scope_type`` is trio's ``CancelScope``."""
        self.started = True
        try:
            with scope_type() as scope:
                self.stopper = scope.cancel
                if self.cancelled:
                    scope.cancel()
                self.value = await self.func(*self.args)
            if scope.cancelled_caught:
                self.error = KeyboardInterrupt()
        except BaseException as exc:  # everything goes back to the caller
            self.error = exc
        finally:
            self._finish()

    async def run_asyncio(self) -> None:
        """In the loop thread (asyncio, uvloop): run the call in its task, with no scope.

        An anyio ``CancelScope`` per call cost ~5.5 us of a ~28 us hop (uvloop); a Ctrl-C is
        rare, so it cancels the task instead (``stopper``: :func:`_cancel_until_done`). A scope
        is level-triggered (every later wait of a cancelled scope raises again) where
        ``task.cancel()`` raises once, and an anyio deadline scope of the core that expires at
        the same moment may take that one cancellation as its own (seen on Python 3.10); so the
        task is cancelled again every ``_RECANCEL`` seconds until it ends, which is what the
        scope did.
        """
        self.started = True
        try:
            if self.cancelled:  # a Ctrl-C came before the job started
                self.error = KeyboardInterrupt()
            else:
                self.value = await self.func(*self.args)
        except BaseException as exc:  # everything goes back to the caller
            self.error = exc
        finally:
            self._finish()

    def _finish(self) -> None:
        self.stopper = None
        running = self.running
        if running is not None:
            # Here rather than in a done callback of the task: that would cost the loop one
            # more pass (after the caller is woken, before the loop can sleep again).
            running.discard(self)
        if not _exiting:
            self.lock.release()
        # At interpreter exit the loop cancels every job; their callers are daemon threads
        # about to be frozen: leave them blocked instead of waking them with a traceback.

    def cancel(self) -> None:
        """In the loop thread: cancel the job (it may not have started yet)."""
        self.cancelled = True
        if self.started and self.stopper is not None:
            self.stopper()


_EAGER = sys.version_info >= (3, 12)


def _eager_task(coro: Any, loop: asyncio.AbstractEventLoop) -> asyncio.Task[None]:
    return asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]


def _eventfd() -> int:
    """A non-blocking eventfd, or -1 where there is none (not Linux)."""
    make = getattr(os, "eventfd", None)
    if make is None:
        return -1
    try:
        fd: int = make(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    except OSError:
        return -1
    return fd


#: Descriptors the portal's loop opens as it starts, by backend (counted: the loop's epoll,
#: wake-up and signal descriptors, and the jobs' eventfd).
_LOOP_FDS = {"asyncio": 4, "uvloop": 8, "trio": 5}


def _check_free_fds(backend: str) -> None:
    """Raise ``OSError(EMFILE)`` unless the loop of ``backend`` can open its descriptors now:
    libuv aborts the whole process when its loop cannot (a blocking call at the descriptor limit
    would kill the program instead of failing)."""
    count = _LOOP_FDS.get(backend, 8)
    fds: list[int] = []
    try:
        for _ in range(count):
            fds.append(os.open(os.devnull, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)))
    except OSError as exc:
        if exc.errno not in (errno.EMFILE, errno.ENFILE):
            return  # (no /dev/null to count with, say: the loop's own start will tell)
        raise OSError(
            exc.errno,
            f"duonet could not start its {backend} event loop: {exc.strerror} (it needs {count} "
            "free descriptors)",
        ) from None
    finally:
        for fd in fds:
            os.close(fd)


#: Seconds between the cancellations of a Ctrl-C'd asyncio job, until it ends.
_RECANCEL = 0.05
#: At most this many trio worker tasks stay parked between jobs (more run while more calls are
#: in flight at once; past this many, a worker ends with its job).
_TRIO_IDLE_MAX = 64


def _cancel_until_done(loop: asyncio.AbstractEventLoop, task: asyncio.Task[None]) -> None:
    """Cancel ``task`` now and again every ``_RECANCEL`` s until it is done (a cancel scope's
    level-triggered cancellation, for a job run without one)."""
    if not task.done():
        task.cancel()
        loop.call_later(_RECANCEL, _cancel_until_done, loop, task)


class _Portal:
    def __init__(self, backend: str) -> None:
        self.backend = backend
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._spawn: Callable[[_Job], object] | None = None
        self._run_soon: Callable[[Callable[[], None]], object] | None = None
        self._stop: Callable[[], object] | None = None
        self.thread_ident: int | None = None
        _check_free_fds(backend)
        self._thread = threading.Thread(target=self._thread_main, name="duonet-portal", daemon=True)
        self._thread.start()
        self._ready.wait()
        error = self._startup_error
        if error is not None:
            why = f"duonet could not start its {backend} event loop"
            if isinstance(error, OSError):  # out of descriptors, say: an OSError like any other
                raise OSError(error.errno, f"{why}: {error.strerror}") from error
            raise RuntimeError(f"{why}: {error}") from error

    def _thread_main(self) -> None:
        self.thread_ident = threading.get_ident()
        if hasattr(signal, "pthread_sigmask"):
            # Let the kernel deliver Ctrl-C to a thread that can act on it, not to the loop.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            if self.backend == "trio":
                anyio.run(self._main_trio, backend="trio")
            else:
                options = {"use_uvloop": True} if self.backend == "uvloop" else {}
                anyio.run(self._main_asyncio, backend="asyncio", backend_options=options)
        except BaseException as exc:
            if not self._ready.is_set():
                self._startup_error = exc
                self._ready.set()

    async def _main_asyncio(self) -> None:
        loop = asyncio.get_running_loop()
        running: set[_Job] = set()  # jobs in flight (their stoppers hold their tasks)
        stopped = asyncio.Event()

        def start(job: _Job) -> None:
            # Python >= 3.12 runs the job at once, up to its first wait (one loop pass fewer).
            coro = job.run_asyncio()
            task = _eager_task(coro, loop) if _EAGER else loop.create_task(coro)
            if not task.done():
                job.stopper = partial(_cancel_until_done, loop, task)
                job.running = running
                running.add(job)

        efd = _eventfd()
        if efd >= 0:
            # The loop's own wake-up (call_soon_threadsafe: a Handle, and on the stdlib loop a
            # socketpair drained with two recv calls, the second raising BlockingIOError) costs
            # more per hop than an eventfd and a queue of jobs: 29 -> 24 us per bare hop on
            # asyncio, 21 -> 18 us on uvloop.
            jobs: collections.deque[_Job] = collections.deque()
            popleft = jobs.popleft
            efd_lock = threading.Lock()  # the eventfd is never written once closed
            efd_open = [True]

            def wake() -> None:
                try:
                    os.eventfd_read(efd)
                except BlockingIOError:
                    pass
                while jobs:
                    start(popleft())

            loop.add_reader(efd, wake)
            push, poke = jobs.append, os.eventfd_write

            def spawn(job: _Job) -> None:
                with efd_lock:
                    if not efd_open:
                        raise RuntimeError("the portal's loop has stopped")
                    push(job)
                    poke(efd, 1)

            self._spawn = spawn
        else:
            self._spawn = lambda job: loop.call_soon_threadsafe(start, job)
        self._run_soon = lambda fn: loop.call_soon_threadsafe(fn)
        self._stop = lambda: loop.call_soon_threadsafe(stopped.set)
        self._ready.set()
        try:
            await stopped.wait()
        finally:
            if efd >= 0:
                with efd_lock:
                    efd_open.clear()
                    loop.remove_reader(efd)
                    os.close(efd)
        for job in list(running):
            if job.stopper is not None:
                job.stopper()

    async def _main_trio(self) -> None:
        import outcome  # (a dependency of trio)
        import trio

        lowlevel = trio.lowlevel
        token = lowlevel.current_trio_token()
        # Parked worker tasks, each waiting for its next job: handing a job to one is a
        # reschedule, where a task per job cost a spawn and a task exit (~3 us of a ~45 us hop).
        idle: list[Any] = []

        async def worker(job: _Job) -> None:
            me = lowlevel.current_task()

            def abort(raise_cancel: Any) -> Any:  # the portal stops: the parked worker ends
                idle.remove(me)  # (called in the canceller's task, not in this one)
                return lowlevel.Abort.SUCCEEDED

            while True:
                await job.run(trio.CancelScope)
                if len(idle) >= _TRIO_IDLE_MAX:
                    return  # enough parked workers already
                idle.append(me)
                job = await lowlevel.wait_task_rescheduled(abort)

        async with trio.open_nursery() as nursery:

            def hand(job: _Job) -> None:
                if idle:
                    lowlevel.reschedule(idle.pop(), outcome.Value(job))
                else:
                    nursery.start_soon(worker, job)

            self._spawn = lambda job: token.run_sync_soon(hand, job)
            self._run_soon = lambda fn: token.run_sync_soon(fn)
            self._stop = lambda: token.run_sync_soon(nursery.cancel_scope.cancel)
            self._ready.set()
            await trio.sleep_forever()

    def call(
        self,
        func: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        undo: Callable[[T], None] | None,
    ) -> T:
        lock = _caller_lock()
        job = _Job(func, args, lock)
        spawn = self._spawn
        assert spawn is not None
        try:
            spawn(job)
        except RuntimeError as exc:  # the loop has stopped (interpreter exit)
            if _exiting:
                # Only daemon threads still run at exit (the others were joined before atexit
                # handlers ran): block as the callers of the jobs in flight do, until the
                # interpreter ends the thread, instead of printing a traceback for it.
                threading.Event().wait()
            raise RuntimeError("duonet's event loop is not running (interpreter exit?)") from exc
        except BaseException:
            # Ctrl-C while handing the job over: it may or may not be queued. Make it a no-op if
            # it runs, and give this thread a fresh lock (the job may still release this one).
            job.cancelled = True
            _local.__dict__.pop("lock", None)
            raise
        # From here on the job will release `lock` exactly once.
        try:
            if _local.main:
                # The main thread wakes up now and then: a SIGINT delivered to another thread
                # only sets a flag, which Python acts on (KeyboardInterrupt) between bytecodes.
                while not lock.acquire(timeout=_SIGNAL_CHECK):
                    pass
            else:
                lock.acquire()
        except BaseException:
            self._cancel_and_wait(job, lock, undo)
            raise
        if job.error is not None:
            error, job.error = job.error, None
            raise error
        return job.value  # type: ignore[no-any-return]

    def _cancel_and_wait(self, job: _Job, lock: Any, undo: Callable[[Any], None] | None) -> None:
        # KeyboardInterrupt (or another async exception) while waiting: cancel the job in the
        # loop and wait for it to unwind, so its socket is left consistent and nothing is lost.
        run_soon = self._run_soon
        assert run_soon is not None
        try:
            run_soon(job.cancel)
        except RuntimeError:  # the loop is gone: this thread's lock is in an unknown state
            _local.__dict__.pop("lock", None)
            return
        while True:
            try:
                lock.acquire()
                break
            except BaseException:  # a second Ctrl-C: keep waiting, the unwind is quick
                continue
        if job.error is None and undo is not None:
            undo(job.value)  # the job won the race: put its result back

    def stop(self, timeout: float = 1.0) -> None:
        if self._stop is not None:
            try:
                self._stop()
            except RuntimeError:
                pass
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)


_lock = threading.Lock()
_portal: _Portal | None = None
_backend: str | None = None
_local = threading.local()


_SIGNAL_CHECK = 0.1  # seconds between the main thread's checks for a pending Ctrl-C


def _caller_lock() -> Any:
    # One lock per calling thread, kept acquired between calls; a job releases it when done.
    try:
        return _local.lock
    except AttributeError:
        _local.main = threading.current_thread() is threading.main_thread()
        lock = _local.lock = _thread.allocate_lock()
        lock.acquire()
        return lock


def _choose_backend() -> str:
    if _backend is not None:
        return _backend
    name = os.environ.get(_ENV_BACKEND, "").strip().lower()
    if name:
        if name not in _BACKENDS:
            raise ValueError(f"{_ENV_BACKEND}={name!r}: expected one of {', '.join(_BACKENDS)}")
        return name
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def configure(backend: str | None = None) -> None:
    """Choose the event loop of the blocking API's portal: ``"asyncio"``, ``"uvloop"``, ``"trio"``.

    Must be called before the first blocking call that needs the portal. The default is uvloop
    when importable, else asyncio; the ``DUONET_BACKEND`` environment variable overrides the
    default. ``None`` restores the default.

    Raises:
        ValueError: unknown backend.
        RuntimeError: the portal is already running on another backend.
    """
    global _backend
    if backend is not None and backend not in _BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: expected one of {', '.join(_BACKENDS)}")
    with _lock:
        if _portal is not None and backend is not None and _portal.backend != backend:
            raise RuntimeError(
                f"duonet's portal is already running on {_portal.backend}; configure() must come "
                "before the first blocking call"
            )
        _backend = backend


def current_backend() -> str:
    """The backend the portal runs (or will run) on."""
    with _lock:
        return _portal.backend if _portal is not None else _choose_backend()


def is_running() -> bool:
    """True once the portal thread has been started (and not reset)."""
    return _portal is not None


def reset() -> None:
    """Stop the portal (its next use starts a new one). For tests and backend switches only:
    no blocking call may be in flight."""
    global _portal
    with _lock:
        portal, _portal = _portal, None
    if portal is not None:
        portal.stop()


_sniffio_local: Any = None
try:  # trio (which needs sniffio) names itself in sniffio's thread-local while it runs
    import sniffio

    _sniffio_local = sniffio.thread_local
except ImportError:  # no sniffio: no trio either
    pass

_running_loop = asyncio._get_running_loop

#: What a blocking call made inside a running event loop raises.
IN_LOOP_MESSAGE = (
    "a blocking duonet call was made from inside a running event loop, where it would block "
    "the loop; use duonet.aio (the same API, awaited) instead"
)


def in_event_loop() -> bool:
    """True if the calling thread is running an asyncio or trio event loop (~60 ns)."""
    return _running_loop() is not None or (
        _sniffio_local is not None and _sniffio_local.name is not None
    )


def _get() -> _Portal:
    global _portal
    portal = _portal
    if portal is None:
        with _lock:
            portal = _portal
            if portal is None:
                portal = _portal = _Portal(_choose_backend())
    return portal


def call(
    func: Callable[..., Awaitable[T]],
    *args: Any,
    undo: Callable[[T], None] | None = None,
) -> T:
    """Run ``await func(*args)`` on the portal's loop and return its result (or raise its error).

    ``undo(result)`` is called if a KeyboardInterrupt arrives just as the call completes, to give
    back a result the caller will never see.

    Raises:
        RuntimeError: called from inside a running event loop (use ``duonet.aio`` there).
    """
    portal = _portal or _get()
    if portal.thread_ident == threading.get_ident() or in_event_loop():
        raise RuntimeError(IN_LOOP_MESSAGE)
    return portal.call(func, args, undo)


def _after_fork_in_child() -> None:
    # The parent's loop thread does not exist here: forget it (its state is unusable) and let the
    # first call start a new one. Locks are re-created: one could have been held during fork.
    global _portal, _lock, _local
    _portal = None
    _lock = threading.Lock()
    _local = threading.local()


_exiting = False


def _at_exit() -> None:
    global _exiting
    _exiting = True
    portal = _portal
    if portal is not None:
        portal.stop(timeout=1.0)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
