"""Peers side by side (issue 15): Hugo and Pelican build the articles ``bantin build`` builds,
and rss2email mails a feed to the SMTP sink the digest runs mail to.

Each peer is a real subprocess of the real tool, timed from here as bantin is:

- Hugo: the system's (Debian: ``apt-get install hugo``); the bench never installs it. The site
  has minimal layouts written here: one page per article, the front page and each category
  paged by 50 like bantin's archive, an RSS feed of each, the sitemap. That is the work of
  ``bantin build`` less its Atom and JSON feeds, archive feeds and calendars.
- Pelican 4 (with Markdown) and rss2email 3.14: from the package index into a venv of their
  own, ``.venv-peers/``, so their dependencies never meet bantin's. Pelican uses its default
  theme with the same shape of output (article pages, pages of 50, RSS and Atom feeds of the
  site and of each category; no author or tag pages, which bantin has none of either).

The builds read the same article files, written on tmpfs (/dev/shm) when the machine has one,
as their outputs are; in turn (bantin, Hugo, Pelican, and again), each cold: its output and
caches removed before it starts. A peer that is missing or fails is reported with the reason,
and the bench goes on.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import data, procs

__all__ = ["bench_builds", "bench_rss2email", "install"]

VENV = data.REPO / ".venv-peers"
PELICAN = "pelican[markdown]>=4,<5"
RSS2EMAIL = "rss2email==3.14"
FEED_ENTRIES = 200  # the figure: one feed of 200 entries, one recipient each
PEER_ENV = {"PYTHONPATH": ""}  # the peers see their own venv, not bantin's source tree


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the peers' programs -----------------------------------------------------------------------


def install(requirement: str, program: str) -> tuple[Path | None, str]:
    """``program`` from .venv-peers, installing ``requirement`` there first if it is not yet;
    else None and why not."""
    path = VENV / "bin" / program
    marker = VENV / f".installed-{program}"
    if path.exists() and marker.exists() and marker.read_text(encoding="utf-8") == requirement:
        return path, ""
    log(f"installing {requirement} into {VENV}")
    try:
        if not (VENV / "bin" / "python").exists():
            subprocess.run(
                [sys.executable, "-m", "venv", str(VENV)], check=True, capture_output=True
            )
        subprocess.run(
            [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", "--no-input", requirement],
            check=True,
            capture_output=True,
            timeout=900,
        )
    except subprocess.CalledProcessError as exc:
        errors = [line for line in exc.stderr.decode(errors="replace").splitlines() if line]
        last = errors[-1] if errors else f"exit {exc.returncode}"
        return None, f"pip could not install {requirement} into {VENV}: {last}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"could not install {requirement} into {VENV}: {exc}"
    marker.write_text(requirement, encoding="utf-8")
    return path, ""


def installed_version(distribution: str) -> str:
    """The version of ``distribution`` in .venv-peers."""
    found = subprocess.run(
        [
            str(VENV / "bin" / "python"),
            "-c",
            f"import importlib.metadata as m; print(m.version({distribution!r}))",
        ],
        capture_output=True,
        text=True,
    )
    return found.stdout.strip() or "?"


def hugo_version(hugo: str) -> tuple[int, ...]:
    said = subprocess.run([hugo, "version"], capture_output=True, text=True).stdout
    found = re.search(r"v(\d+)\.(\d+)\.(\d+)", said)
    return tuple(int(n) for n in found.groups()) if found else (0, 0, 0)


def scratch(work: Path) -> Path:
    """A folder on tmpfs if the machine has one (no tool waits on a disk), else under work."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return Path(tempfile.mkdtemp(prefix="bantin-bench-peers-", dir=shm))
    return Path(tempfile.mkdtemp(prefix="peers-", dir=work))


def on_tmpfs(path: Path) -> bool:
    with open("/proc/mounts", encoding="utf-8") as mounts:
        points = {line.split()[1]: line.split()[2] for line in mounts if line.strip()}
    for parent in (path, *path.parents):
        if str(parent) in points:
            return points[str(parent)] == "tmpfs"
    return False


# -- the sites -------------------------------------------------------------------------------

HUGO_LAYOUTS = {
    "_default/baseof.html": """<!doctype html>
<html lang="vi"><head><meta charset="utf-8"><title>{{ .Title }} – {{ .Site.Title }}</title>
{{ with .OutputFormats.Get "rss" }}<link rel="alternate" type="application/rss+xml" \
href="{{ .Permalink }}">{{ end }}
</head><body><header><a href="{{ "/" | relURL }}">{{ .Site.Title }}</a></header>
<main>{{ block "main" . }}{{ end }}</main></body></html>
""",
    "_default/single.html": """{{ define "main" }}<article><h1>{{ .Title }}</h1>
<p><time datetime="{{ .Date.Format "2006-01-02T15:04:05Z07:00" }}">\
{{ .Date.Format "02/01/2006 15:04" }}</time>{{ with .Params.author }} · {{ . }}{{ end }}
{{ range .GetTerms "category" }} · <a href="{{ .RelPermalink }}">{{ .LinkTitle }}</a>{{ end }}</p>
{{ .Content }}</article>{{ end }}
""",
    # the front page lists every article; a category page its own; both in pages of 50
    "_default/list.html": """{{ define "main" }}<h1>{{ .Title }}</h1>
{{ $pages := .Pages }}{{ if .IsHome }}{{ $pages = .Site.RegularPages }}{{ end }}
{{ $pager := .Paginate $pages }}
<ul>{{ range $pager.Pages }}<li><a href="{{ .RelPermalink }}">{{ .Title }}</a>
<time>{{ .Date.Format "02/01/2006" }}</time><p>{{ .Summary }}</p></li>{{ end }}</ul>
<nav>{{ with $pager.Prev }}<a href="{{ .URL }}">mới hơn</a>{{ end }}
{{ with $pager.Next }}<a href="{{ .URL }}">cũ hơn</a>{{ end }}</nav>
{{ end }}
""",
}


def hugo_site(site: Path, content: Path, version: tuple[int, ...]) -> None:
    """A Hugo site over ``content``: the articles' ``category`` is its one taxonomy, and the
    year folders make no section pages (bantin has none)."""
    if version >= (0, 128):  # the pager and feed settings moved in 0.128
        paging = "[pagination]\npagerSize = 50\n[services.rss]\nlimit = 50\n"
    else:
        paging = "paginate = 50\nrssLimit = 50\n"
    site.mkdir(parents=True, exist_ok=True)
    (site / "config.toml").write_text(
        'baseURL = "https://laichau.example.gov.vn/"\n'
        'languageCode = "vi"\n'
        'title = "Cổng thông tin điện tử tỉnh Lai Châu"\n'
        f'contentDir = "{content}"\n'
        'disableKinds = ["section"]\n'
        "[taxonomies]\n"
        'category = "category"\n' + paging,
        encoding="utf-8",
    )
    for name, text in HUGO_LAYOUTS.items():
        path = site / "layouts" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def pelican_settings(site: Path, content: Path) -> Path:
    """pelicanconf.py for the default theme; slugs from file names, as bantin's are."""
    settings = site / "pelicanconf.py"
    site.mkdir(parents=True, exist_ok=True)
    settings.write_text(
        'SITENAME = "Cổng thông tin điện tử tỉnh Lai Châu"\n'
        'SITEURL = "https://laichau.example.gov.vn"\n'
        f"PATH = {str(content)!r}\n"
        'TIMEZONE = "Asia/Ho_Chi_Minh"\n'
        'DEFAULT_LANG = "vi"\n'
        "DEFAULT_PAGINATION = 50\n"
        'SLUGIFY_SOURCE = "basename"\n'
        'ARTICLE_URL = ARTICLE_SAVE_AS = "articles/{slug}/index.html"\n'
        'FEED_ALL_RSS = "rss.xml"\n'
        'FEED_ALL_ATOM = "atom.xml"\n'
        'CATEGORY_FEED_RSS = "categories/{slug}/rss.xml"\n'
        'CATEGORY_FEED_ATOM = "categories/{slug}/atom.xml"\n'
        "FEED_MAX_ITEMS = 50\n"
        'AUTHOR_SAVE_AS = AUTHORS_SAVE_AS = TAG_SAVE_AS = TAGS_SAVE_AS = ""\n'
        "AUTHOR_FEED_ATOM = AUTHOR_FEED_RSS = TRANSLATION_FEED_ATOM = None\n"
        "LOAD_CONTENT_CACHE = CACHE_CONTENT = False\n"
        f"CACHE_PATH = {str(site / 'cache')!r}\n",
        encoding="utf-8",
    )
    return settings


# -- cold builds -----------------------------------------------------------------------------


@dataclass
class ColdBuild:
    """One tool's build of the site: its command, and what to remove so each run starts cold."""

    tool: str  # name and version, as the table shows it
    command: list[str]
    cwd: Path
    output: Path
    caches: tuple[Path, ...] = ()
    env: dict[str, str] | None = None
    seconds: list[float] = field(default_factory=list)
    failed: str = ""

    def run(self) -> None:
        for path in (self.output, *self.caches):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        try:
            self.seconds.append(procs.run_worker(*self.command, cwd=self.cwd, env=self.env).seconds)
        except (RuntimeError, TimeoutError) as exc:
            self.failed = f"{self.tool} failed: {str(exc).strip().splitlines()[-1]}"

    def figures(self) -> dict[str, Any]:
        if self.failed:
            return {"tool": self.tool, "skipped": self.failed, "seconds": self.seconds}
        files = size = 0
        for folder, _dirs, names in os.walk(self.output):
            files += len(names)
            size += sum(os.stat(os.path.join(folder, name)).st_size for name in names)
        return {"tool": self.tool, "seconds": self.seconds, "files": files, "bytes": size}


def bench_builds(work: Path, count: int, reps: int) -> dict[str, Any]:
    """Cold builds of ``count`` articles by bantin, Hugo and Pelican, ``reps`` times each."""
    base = scratch(work)
    result: dict[str, Any] = {"articles": count, "tmpfs": on_tmpfs(base)}
    try:
        content = base / "content"
        log(f"peers: generating {count} articles in {base}")
        data.write_articles(content, count)
        config = data.make_project(base / "bantin", content)
        project = config.parent
        builds = {
            "bantin": ColdBuild(
                f"bantin {installed_bantin()}",
                [procs.BANTIN, "--config", str(config), "build"],
                project,
                project / "public",
                (project / "var" / "cache",),
            )
        }
        hugo = shutil.which("hugo")
        if hugo is None:
            result["hugo"] = {
                "skipped": "no hugo on PATH (Debian: apt-get install hugo); the bench does not "
                "install it"
            }
        else:
            version = hugo_version(hugo)
            site = base / "hugo"
            hugo_site(site, content, version)
            out, cache = base / "hugo-public", base / "hugo-cache"
            builds["hugo"] = ColdBuild(
                "Hugo " + ".".join(map(str, version)),
                [
                    hugo,
                    "--quiet",
                    "--source",
                    str(site),
                    "--destination",
                    str(out),
                    "--cacheDir",
                    str(cache),
                ],
                site,
                out,
                (cache, site / "resources", site / ".hugo_build.lock"),
            )
        pelican, why_not = install(PELICAN, "pelican")
        if pelican is None:
            result["pelican"] = {"skipped": why_not}
        else:
            site = base / "pelican"
            settings = pelican_settings(site, content)
            out = base / "pelican-public"
            builds["pelican"] = ColdBuild(
                f"Pelican {installed_version('pelican')}",
                [str(pelican), "--quiet", "-s", str(settings), "-o", str(out), str(content)],
                site,
                out,
                (site / "cache",),
                PEER_ENV,
            )
        for rep in range(reps):
            for build in builds.values():
                if build.failed:
                    continue
                log(f"peers, {count} articles: cold {build.tool} build {rep + 1}/{reps}")
                build.run()
        for name, build in builds.items():
            result[name] = build.figures()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return result


def installed_bantin() -> str:
    from importlib.metadata import version

    return version("bantin")


# -- rss2email ---------------------------------------------------------------------------------

# rss2email's defaults, but for the mail transport: plain SMTP to the sink, no TLS, no login
R2E_CONFIG = """[DEFAULT]
to = nguoi.dung@example.org
from = bantin@laichau.example.gov.vn
email-protocol = smtp
smtp-server = 127.0.0.1:{port}
smtp-ssl = False
smtp-auth = False
"""
# what the r2e script does (``rss2email.main.run()``), timed from inside as well: the digest
# run's seconds are taken in its process too, after start-up
R2E_TIMED = """import json, sys, time
import rss2email.main
sys.argv[0] = "r2e"
started = time.perf_counter()
rss2email.main.run()
print(json.dumps({"seconds": time.perf_counter() - started}))
"""


def _count_after(sink: procs.Sink, expected: int | None) -> int | None:
    """The sink's count, waiting up to 5 s for ``expected`` (it counts a moment after QUIT)."""
    deadline = time.monotonic() + 5
    count = sink.received()
    if expected is None:
        return count
    while count is not None and count < expected and time.monotonic() < deadline:
        time.sleep(0.1)
        count = sink.received()
    return count


def bench_rss2email(work: Path, sink: procs.Sink, reps: int) -> dict[str, Any]:
    """``r2e run`` mailing one feed of FEED_ENTRIES entries (a bantin site's rss.xml, served
    over loopback HTTP) to one recipient through ``sink``; a fresh r2e state each time."""
    r2e, why_not = install(RSS2EMAIL, "r2e")
    if r2e is None:
        return {"skipped": why_not}
    result: dict[str, Any] = {"tool": f"rss2email {installed_version('rss2email')}"}
    result["entries"], result["runs"] = FEED_ENTRIES, []
    base = work / "rss2email"
    content = base / "content"
    data.write_articles(content, FEED_ENTRIES, seed=7)
    config = data.make_project(base / "site", content, feed_items=FEED_ENTRIES)
    procs.run_worker(procs.BANTIN, "--config", str(config), "build", cwd=config.parent)
    port = procs.free_port()
    public = config.parent / "public"
    http = [procs.PYTHON, "-m", "http.server", str(port), "--bind", "127.0.0.1", "-d", str(public)]
    server = procs.start(http, log=base / "http.log")
    env = {**PEER_ENV, "XDG_RUNTIME_DIR": str(base)}  # r2e's lock file goes there, not /tmp
    try:
        procs.wait_port(port, 20, server)
        for rep in range(reps):
            log(f"rss2email: r2e run, {FEED_ENTRIES} entries, {rep + 1}/{reps}")
            home = base / f"r2e-{rep}"
            home.mkdir()
            (home / "r2e.cfg").write_text(R2E_CONFIG.format(port=sink.port), encoding="utf-8")
            files = ["-c", str(home / "r2e.cfg"), "-d", str(home / "r2e.json")]
            feed = f"http://127.0.0.1:{port}/rss.xml"
            procs.run_worker(str(r2e), *files, "add", "bantin", feed, env=env)
            before = sink.received()
            python = str(VENV / "bin" / "python")
            try:
                ran = procs.run_worker(python, "-c", R2E_TIMED, *files, "run", env=env)
            except (RuntimeError, TimeoutError) as exc:
                result["skipped"] = f"r2e run failed: {str(exc).strip().splitlines()[-1]}"
                break
            expected = None if before is None else before + FEED_ENTRIES
            after = _count_after(sink, expected)
            received = None if before is None or after is None else after - before
            sent = FEED_ENTRIES if received is None else received  # what arrived, if counted
            result["runs"].append(
                {
                    "wall_seconds": ran.seconds,
                    "seconds": ran.result["seconds"],
                    "received": received,
                    "messages_per_second": sent / ran.result["seconds"],
                    "wall_messages_per_second": sent / ran.seconds,
                }
            )
    finally:
        procs.stop(server)
        shutil.rmtree(base, ignore_errors=True)
    return result
