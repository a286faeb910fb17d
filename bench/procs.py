"""Child processes: workers with their peak RSS, SMTP sinks, HTTP servers; all loopback, all reaped.

Every process started here is registered and stopped by ``stop_all`` (also at exit), by its own
pid, so an interrupted benchmark leaves nothing listening.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PYTHON = sys.executable
BANTIN = str(Path(sys.executable).with_name("bantin"))
REPO = Path(__file__).resolve().parent.parent
_started: list[subprocess.Popen[bytes]] = []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode} at start")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def start(
    args: list[str], *, cwd: Path | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen(
        args,
        cwd=cwd,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own group: stopping it stops whatever it started
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    _started.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc in _started:
        _started.remove(proc)


@atexit.register
def stop_all() -> None:
    for proc in list(_started):
        stop(proc, timeout=5)


@dataclass(frozen=True)
class Finished:
    result: dict[str, Any]
    seconds: float  # wall time seen from here
    max_rss_kib: int  # from wait4: the child's own peak, not its siblings'


def run_worker(
    *args: str, timeout: float = 3600, cwd: Path | None = None, env: dict[str, str] | None = None
) -> Finished:
    """``python -m bench.worker ARGS`` (or any command if args[0] is absolute); its JSON line.
    ``env`` adds to (or overrides) the environment the child inherits.

    The child is reaped with ``os.wait4`` so its peak RSS is its own, not the largest of all
    children so far (which is what RUSAGE_CHILDREN would say).
    """
    command = list(args) if args[0].startswith("/") else [PYTHON, "-m", "bench.worker", *args]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            stdout=out,
            stderr=err,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        )
        _started.append(proc)
        deadline = time.monotonic() + timeout
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{' '.join(command)} ran longer than {timeout:.0f} s")
                time.sleep(0.01)
        finally:
            if pid := locals().get("pid"):
                proc.returncode = os.waitstatus_to_exitcode(status)
            else:
                stop(proc)
            if proc in _started:
                _started.remove(proc)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}:\n{stderr[-3000:]}")
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {"stdout": stdout[-2000:]}
    return Finished(result, seconds, usage.ru_maxrss)


# -- SMTP sinks ------------------------------------------------------------------------------


@dataclass
class Sink:
    kind: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path  # where the sink writes its running count of messages received

    def received(self) -> int | None:
        """Messages the sink has received so far (from the count at the end of its log)."""
        with contextlib.suppress(OSError), self.log.open("rb") as file:
            file.seek(max(0, file.seek(0, os.SEEK_END) - 256))
            counts = re.findall(rb"mesg=(\d+)", file.read())
            return int(counts[-1]) if counts else 0
        return None


def start_sink(workdir: Path, prefer: str = "auto") -> Sink:
    """Postfix's smtp-sink if installed (fast, C), else an aiosmtpd sink; in another process.
    Either writes a running count of the messages it received to its log (``Sink.received``)."""
    port = free_port()
    smtp_sink = shutil.which("smtp-sink") or (
        "/usr/sbin/smtp-sink" if os.path.exists("/usr/sbin/smtp-sink") else None
    )
    if smtp_sink and prefer in ("auto", "smtp-sink"):
        args = [smtp_sink]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]  # smtp-sink refuses to run as root without it
        log = workdir / "smtp-sink.log"
        # -c: "sess=N quit=N mesg=N" after each message and session, a few bytes each
        proc = start([*args, "-c", f"127.0.0.1:{port}", "1024"], log=log)
        wait_port(port, 10, proc)
        return Sink("postfix smtp-sink", port, proc, log)
    log = workdir / "aiosmtpd-sink.log"
    proc = start([PYTHON, "-m", "bench.worker", "aiosmtpd-sink", "--port", str(port)], log=log)
    wait_port(port, 20, proc)
    return Sink("aiosmtpd (Python, in a subprocess)", port, proc, log)
