"""Rendering of the dashboard's server-side templates (package data under bridge/data/dashboard).

Autoescaping is on for every template: job names, users' log lines and file names are user
input. The pages load only this service's own CSS and JavaScript (nothing external is
reachable on a cluster), which the Content-Security-Policy enforces.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from importlib import resources
from typing import Any

from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, PackageLoader

STATIC_FILES = {"dashboard.css": "text/css; charset=utf-8", "dashboard.js": "text/javascript; charset=utf-8"}

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # A sign-in link in the address bar goes to no other site; same-origin (not no-referrer) keeps
    # the Origin header of the forms, which no-referrer would turn into "null".
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def duration(seconds: Any) -> str:
    """90061 -> '1d 01:01:01'; None -> '-'."""
    if seconds is None:
        return "-"
    total = int(float(seconds))
    days, rest = divmod(max(0, total), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}d {clock}" if days else clock


def short_time(value: Any) -> str:
    """An ISO time as 'YYYY-MM-DD HH:MM:SS' (the server's zone, as Slurm prints it)."""
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(str(value)).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return str(value)


def size(value: Any) -> str:
    number = float(value or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if number < 1024 or unit == "GiB":
            return f"{number:.0f} {unit}" if unit == "B" else f"{number:.1f} {unit}"
        number /= 1024
    return f"{number:.1f} GiB"


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(loader=PackageLoader("bridge", "data/dashboard/templates"), autoescape=True,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["duration"] = duration
    env.filters["short_time"] = short_time
    env.filters["size"] = size
    return env


def render(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = environment().get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


def static_file(name: str) -> Response:
    media_type = STATIC_FILES[name]
    data = resources.files("bridge").joinpath("data", "dashboard", "static", name).read_bytes()
    return Response(data, media_type=media_type, headers={"Cache-Control": "max-age=300",
                                                          "X-Content-Type-Options": "nosniff"})
