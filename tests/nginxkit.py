"""A real nginx running deploy/nginx.conf, in a temporary folder, for one test.

    with running_nginx(public, upstream_port=bantin.port) as nginx:
        httpx.get(nginx.url + "/rss.xml")

The server block is the shipped file with only its placeholders replaced: the project
directory (/srv/bantin), the listen port (80) and bantin's address (127.0.0.1:8080); the
test wraps it in an ``http`` block as Debian's /etc/nginx/nginx.conf does (mime.types, logs,
temporary paths). nginx comes from Debian's nginx package (scripts/test-services installs it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from servicekit import wait_until
from smtpserver import free_port

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
MIME_TYPES = "/etc/nginx/mime.types"


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"deploy/nginx.conf should hold {old!r} once"
    return text.replace(old, new)


def server_block(public: Path, port: int, upstream_port: int) -> str:
    """deploy/nginx.conf for this test: its placeholders replaced, nothing else."""
    text = SHIPPED.read_text(encoding="utf-8")
    text = _replace_once(text, "root /srv/bantin/public;", f"root {public};")
    text = _replace_once(text, "listen 80;", f"listen 127.0.0.1:{port};")
    text = _replace_once(text, "listen [::]:80;", "")  # the test listens on loopback only
    return _replace_once(text, "server 127.0.0.1:8080;", f"server 127.0.0.1:{upstream_port};")


def main_config(prefix: Path, server: str) -> str:
    """What /etc/nginx/nginx.conf gives a site's server block, with every path under ``prefix``."""
    user = "user root root;\n" if os.geteuid() == 0 else ""  # our temporary folders are 0700
    temp = "".join(
        f"    {name}_temp_path {prefix}/{name};\n"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}worker_processes 1;\ndaemon off;\npid {prefix}/nginx.pid;\n"
        f"error_log {prefix}/error.log info;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"    include {MIME_TYPES};\n    default_type application/octet-stream;\n"
        f"    access_log {prefix}/access.log;\n{temp}"
        f"{server}\n}}\n"
    )


def check_config(config: Path) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` on ``config``."""
    return subprocess.run(
        [NGINX, "-t", "-p", str(config.parent), "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )


@dataclass
class Nginx:
    port: int
    prefix: Path
    config: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


@contextmanager
def running_nginx(public: Path, *, upstream_port: int) -> Iterator[Nginx]:
    """nginx in the foreground on a free port, serving ``public`` in front of bantin."""
    with tempfile.TemporaryDirectory(prefix="bantin-nginx-") as folder:
        prefix = Path(folder)
        port = free_port()
        config = prefix / "nginx.conf"
        config.write_text(
            main_config(prefix, server_block(public, port, upstream_port)), encoding="utf-8"
        )
        checked = check_config(config)
        assert checked.returncode == 0, checked.stderr
        proc = subprocess.Popen(
            [NGINX, "-p", str(prefix), "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        nginx = Nginx(port, prefix, config)
        try:

            def listening() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"nginx exited {proc.returncode}:\n{nginx.error_log()}")
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                except OSError:
                    return False
                return True

            wait_until(listening, 10, "nginx to listen")
            yield nginx
        finally:
            proc.terminate()  # SIGTERM: nginx's fast shutdown, its workers with it
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            print(f"--- nginx error log ---\n{nginx.error_log()[-3000:]}")
