"""The organizer's commands: ``unisono start|reschedule|abort|status|announce|token``.

They talk to a running server through its HTTP JSON API (server/openapi.py),
with the stdlib HTTP client only. The parsing and formatting helpers are pure
(``now`` comes in as an argument); ``run_command`` is the I/O glue. Every
error is one line on stderr that says what to do, and exit code 1; usage
errors are argparse's, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from server.openapi import MAX_LEAD_S

DEFAULT_SERVER = "http://127.0.0.1:8080"
# How long one request may take before the CLI gives up: the API answers in
# milliseconds on a healthy server, so 5 s means it is stuck or unreachable.
REQUEST_TIMEOUT_S = 10.0
# Who did it, for the server's event log (the console sends "console").
CLIENT_NAME = "cli"
# The most laggards the status table lists (the API sends up to 20).
MAX_LAGGARD_ROWS = 10
COMMANDS = ("start", "reschedule", "abort", "status", "announce", "token")

_DURATION = re.compile(r"(?:(?P<h>\d+(?:\.\d*)?)h)?(?:(?P<m>\d+(?:\.\d*)?)m)?(?:(?P<s>\d+(?:\.\d*)?)s?)?")
_TIME_OF_DAY = re.compile(r"(?P<h>\d{1,2}):(?P<m>\d{2})(?::(?P<s>\d{2}))?")


class CommandError(Exception):
    """A command failed; the text says what happened and what to do next."""


class ApiError(CommandError):
    """The server answered with an error: its HTTP status, its stable code and its message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


# -- pure helpers -------------------------------------------------------------


def parse_duration_s(text: str) -> float:
    """Seconds from '10s', '90s', '2m', '1m30s', '1h', '1h2m3s' or a plain number of seconds ('10', '2.5').

    Raises ValueError with what was expected for anything else, a zero
    duration or one above MAX_LEAD_S.
    """
    match = _DURATION.fullmatch(text.strip().lower())
    if not text.strip() or match is None:
        raise ValueError(f"expected a duration like 10s, 90s, 2m, 1m30s, 1h or a number of seconds, found {text!r}")
    seconds = (
        float(match["h"] or 0) * 3600 + float(match["m"] or 0) * 60 + float(match["s"] or 0)
    )
    if seconds <= 0:
        raise ValueError(f"expected a duration above 0, found {text!r}")
    if seconds > MAX_LEAD_S:
        raise ValueError(f"expected at most {MAX_LEAD_S // 3600} hours ahead, found {text!r}")
    return seconds


def parse_at(text: str, now: datetime) -> datetime:
    """The aware datetime that '--at TEXT' names, given the CLI machine's aware local ``now``.

    'HH:MM' or 'HH:MM:SS' is that time today in ``now``'s timezone; a full
    ISO 8601 datetime must carry its offset ('2026-06-14T21:00:00+02:00',
    or 'Z'). Raises ValueError for a bad format, and for a time that is not
    after ``now``, with what to do instead.
    """
    text = text.strip()
    clock = _TIME_OF_DAY.fullmatch(text)
    if clock is not None:
        hour, minute, second = int(clock["h"]), int(clock["m"]), int(clock["s"] or 0)
        if hour > 23 or minute > 59 or second > 59:
            raise ValueError(f"expected a time of day HH:MM[:SS] from 00:00:00 to 23:59:59, found {text!r}")
        # The UTC offset is now's: wrong by an hour only for a time across a
        # daylight-saving change later today, on that night alone.
        target = now.replace(hour=hour, minute=minute, second=second, microsecond=0)
        shown, now_shown = target.strftime("%H:%M:%S"), now.strftime("%H:%M:%S")
    else:
        try:
            target = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"expected HH:MM[:SS] (today, local time) or an ISO 8601 datetime with its offset, found {text!r}"
            ) from None
        if target.tzinfo is None:
            raise ValueError(f"{text!r} has no UTC offset: add one (e.g. {text}+01:00 or {text}Z), or give HH:MM:SS")
        shown, now_shown = text, now.astimezone(target.tzinfo).isoformat(timespec="seconds")
    if target <= now:
        raise ValueError(f"{shown} is in the past (it is {now_shown} now): give a later time, or use --in")
    return target


def start_body(in_s: float | None, at: datetime | None, confirm: bool) -> dict[str, Any]:
    """The JSON body of /api/start and /api/reschedule: exactly one of in_s and at (RFC 3339)."""
    body: dict[str, Any] = {"in_s": in_s} if at is None else {"at": at.isoformat()}
    if confirm:
        body["confirm"] = True
    return body


def local_time(at_us: int, tz: tzinfo | None, today: date | None = None) -> str:
    """'21:00:00 CET' for µs since the Unix epoch, in ``tz``; with the date in front when not ``today``."""
    moment = datetime.fromtimestamp(at_us / 1e6, tz)
    zone = moment.strftime("%Z")
    clock = moment.strftime("%H:%M:%S") + (f" {zone}" if zone else "")
    if today is not None and moment.date() != today:
        return f"{moment.date().isoformat()} {clock}"
    return clock


def scheduled_text(verb: str, snapshot: dict[str, Any], now_us: int, tz: tzinfo | None) -> str:
    """'Show scheduled: starts at 21:00:00 CET (in 10.0 s), epoch 3' from a Snapshot, ``now_us`` the CLI's clock."""
    start_us = snapshot.get("start_us")
    if start_us is None:
        return f"Show {verb}: {snapshot.get('state')}, epoch {snapshot.get('epoch')}"
    today = datetime.fromtimestamp(now_us / 1e6, tz).date()
    return (
        f"Show {verb}: starts at {local_time(start_us, tz, today)} "
        f"(in {(start_us - now_us) / 1e6:.1f} s), epoch {snapshot.get('epoch')}"
    )


def _table(header: list[str], rows: list[list[str]], align: str, indent: str = "  ") -> list[str]:
    """Columns padded to their widest cell, each aligned as ``align`` says: 'l' left, 'r' right."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(width) if side == "l" else cell.rjust(width) for cell, width, side in zip(row, widths, align)]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _relative_s(seconds: float) -> str:
    return f"in {seconds:.1f} s" if seconds >= 0 else f"{-seconds:.1f} s ago"


COUNT_COLUMNS = ("connected", "downloaded", "unlocked", "synced", "ready")


def status_text(status: dict[str, Any], tz: tzinfo | None) -> str:
    """The readable status table from GET /api/status; times relative to the server's clock (server_us)."""
    show = status.get("show", {})
    server_us = int(status.get("server_us", 0))
    today = datetime.fromtimestamp(server_us / 1e6, tz).date()
    lines = [f"{status.get('title', '')}: {show.get('state')}, epoch {show.get('epoch')}"]
    if show.get("start_us") is not None:
        start_us = int(show["start_us"])
        lines.append(
            f"  start:  {local_time(start_us, tz, today)} ({_relative_s((start_us - server_us) / 1e6)})"
        )
    lines.append(f"  server: {status.get('server_time')}, timezone {status.get('timezone')}")
    share, share_min = float(status.get("ready_share", 0)), float(status.get("ready_share_min", 0))
    lines.append(
        f"  devices: {status.get('devices', 0)} connected, ready {share:.0%} "
        f"(a start without --yes needs {share_min:.0%})"
    )
    lines.append(f"  shortest safe lead: {int(status.get('lead_min_ms', 0)) / 1000:.1f} s")

    groups: dict[str, dict[str, int]] = status.get("groups", {})
    funnel: dict[str, int] = status.get("funnel", {})
    rows = [[name, *(str(counts.get(column, 0)) for column in COUNT_COLUMNS)] for name, counts in groups.items()]
    rows.append(["all", *(str(funnel.get(column, 0)) for column in COUNT_COLUMNS)])
    lines += ["", *_table(["group", *COUNT_COLUMNS], rows, "lrrrrr", indent="")]

    bounds = status.get("bounds", {})
    edges: list[float] = bounds.get("edges_ms", [])
    counts: list[int] = bounds.get("counts", [])
    labels = [f"<= {edge:g} ms" for edge in edges] + ([f"> {edges[-1]:g} ms"] if edges else [])
    bound_rows = [[label, str(count)] for label, count in zip(labels, counts)]
    bound_rows.append(["no estimate", str(bounds.get("unknown", 0))])
    lines += ["", "error bounds", *_table(["bound", "devices"], bound_rows, "lr")]

    laggards: list[dict[str, Any]] = status.get("laggards", [])
    if laggards:
        shown = laggards[:MAX_LAGGARD_ROWS]
        more = f", {len(shown)} shown" if len(shown) < len(laggards) else ""
        lag_rows = [
            [str(lag.get("device")), str(lag.get("group")), _ms(lag.get("bound_ms")), _ms(lag.get("rtt_ms")), str(lag.get("reason"))]
            for lag in shown
        ]
        lines += ["", f"laggards ({len(laggards)}{more})", *_table(["device", "group", "bound", "rtt", "reason"], lag_rows, "llrrl")]
    else:
        lines += ["", "laggards: none"]

    clock = status.get("clock", {})
    upstream = clock.get("upstream")
    upstream_text = (
        f"upstream {upstream} offset {_ms(clock.get('upstream_offset_ms'))}" if upstream else "no upstream NTP server"
    )
    lines += ["", f"clock: event loop lag p99 {_ms(clock.get('loop_lag_ms'))}, {upstream_text}"]
    lines.append(f"join:  {status.get('join_url')}")
    return "\n".join(lines)


def server_url(text: str) -> str:
    """The server's base URL from --server: 'http://' added when no scheme is given, no trailing slash."""
    text = text.strip()
    return (text if "://" in text else f"http://{text}").rstrip("/")


def organizer_url(server: str, token: str) -> str:
    """The organizer console's URL on ``server``, carrying the token."""
    return f"{server.rstrip('/')}/organizer.html?token={urllib.parse.quote(token, safe='')}"


# -- I/O ----------------------------------------------------------------------


def read_token_file(data_dir: Path) -> str | None:
    """The token `unisono serve` keeps in <data_dir>/organizer-token, or None if there is none (yet)."""
    try:
        token = (data_dir / "organizer-token").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    # serve replaces a token shorter than 16 characters with a new one.
    return token if len(token) >= 16 else None


def _resolve_token(args: argparse.Namespace) -> str:
    token = args.token or read_token_file(args.data_dir)
    if not token:
        raise CommandError(
            f"no organizer token: pass --token or set UNISONO_TOKEN, or run this on the server machine "
            f"(it reads {args.data_dir / 'organizer-token'}; --data-dir names another folder)"
        )
    return str(token)


def call_api(server: str, token: str, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One API request; the decoded JSON answer, or CommandError/ApiError saying what to do."""
    url = server.rstrip("/") + path
    data = None if method == "GET" else json.dumps(body if body is not None else {}).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("X-Unisono-Client", CLIENT_NAME)
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        raise _api_error(url, exc) from None
    except urllib.error.URLError as exc:
        raise _connection_error(server, exc.reason) from None
    except (TimeoutError, OSError) as exc:
        raise _connection_error(server, exc) from None
    try:
        answer = json.loads(raw)
    except ValueError:
        raise CommandError(f"{url} did not answer JSON: is --server {server} a Unisono server?") from None
    if not isinstance(answer, dict):
        raise CommandError(f"{url} answered {type(answer).__name__} JSON, expected an object: is it a Unisono server?")
    return answer


def _connection_error(server: str, reason: object) -> CommandError:
    if isinstance(reason, ConnectionRefusedError):
        return CommandError(f"no Unisono server at {server}: start one with `unisono serve`, or pass --server")
    if isinstance(reason, TimeoutError):
        return CommandError(
            f"the server at {server} did not answer within {REQUEST_TIMEOUT_S:g} s: "
            "check that it runs and is reachable from here, or pass --server "
            "(after repeated wrong tokens it answers up to 5 s late: check --token too)"
        )
    text = getattr(reason, "strerror", None) or str(reason)
    return CommandError(f"cannot reach {server}: {text}: check --server and the network")


def _api_error(url: str, exc: urllib.error.HTTPError) -> CommandError:
    try:
        text = exc.read().decode("utf-8", "replace")
    except (OSError, TimeoutError):
        text = ""
    finally:
        exc.close()
    if exc.code == 401:
        return ApiError(
            401, "unauthorized", "the server refused the token: run `unisono token` on the server machine, or pass --token"
        )
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    if 400 <= exc.code < 500 and isinstance(payload, dict) and "message" in payload:
        return ApiError(exc.code, str(payload.get("error", "")), str(payload["message"]))
    if 400 <= exc.code < 500:
        # An answer without the API's JSON error: some other server, or a
        # Unisono server from before the organizer API.
        return ApiError(
            exc.code, "", f"{url} answered HTTP {exc.code} {exc.reason}: is --server a Unisono server with the organizer API?"
        )
    detail = " ".join(text.split())[:300]
    return ApiError(exc.code, "", f"the server failed: HTTP {exc.code} {exc.reason}" + (f": {detail}" if detail else ""))


def _ask(question: str) -> bool:
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:
        return False


def _schedule(args: argparse.Namespace) -> int:
    at = None
    if args.at is not None:
        try:
            at = parse_at(args.at, datetime.now().astimezone())
        except ValueError as exc:
            raise CommandError(str(exc)) from None
    token = _resolve_token(args)
    path = f"/api/{args.command}"
    try:
        snapshot = call_api(args.server, token, "POST", path, start_body(args.in_s, at, args.yes))
    except ApiError as exc:
        if exc.code != "not_ready":
            raise
        print(exc, file=sys.stderr)
        if not sys.stdin.isatty():
            raise CommandError(f"not started: run `unisono {args.command}` again with --yes to start anyway") from None
        if not _ask("Start anyway? [y/N] "):
            raise CommandError("not started") from None
        snapshot = call_api(args.server, token, "POST", path, start_body(args.in_s, at, True))
    verb = "scheduled" if args.command == "start" else "rescheduled"
    print(scheduled_text(verb, snapshot, time.time_ns() // 1000, datetime.now().astimezone().tzinfo))
    return 0


def _token(args: argparse.Namespace) -> int:
    token = read_token_file(args.data_dir)
    if token is None:
        raise CommandError(
            f"no token yet: run `unisono serve` once (it creates {args.data_dir / 'organizer-token'})"
        )
    print(f"token:     {token}")
    print(f"organizer: {organizer_url(args.server, token)}")
    return 0


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "token":
        return _token(args)
    if args.command in ("start", "reschedule"):
        return _schedule(args)
    token = _resolve_token(args)
    if args.command == "abort":
        snapshot = call_api(args.server, token, "POST", "/api/abort")
        print(f"Show aborted: {snapshot.get('state')}, epoch {snapshot.get('epoch')}")
        return 0
    if args.command == "announce":
        sent = call_api(args.server, token, "POST", "/api/announce", {"text": " ".join(args.text)})
        devices = sent.get("devices", 0)
        print(f"Announcement sent to {devices} device{'s' if devices != 1 else ''}.")
        return 0
    status = call_api(args.server, token, "GET", "/api/status")
    if args.json:
        print(json.dumps(status, indent=2, ensure_ascii=False))
    else:
        print(status_text(status, datetime.now().astimezone().tzinfo))
    return 0


def run_command(args: argparse.Namespace) -> int | None:
    """Run an organizer command; its exit code, or None when ``args.command`` is not one of them."""
    if args.command not in COMMANDS:
        return None
    args.server = server_url(args.server)
    try:
        return _dispatch(args)
    except CommandError as exc:
        print(f"unisono {args.command}: {exc}", file=sys.stderr)
        return 1


def _duration_arg(text: str) -> float:
    try:
        return parse_duration_s(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_commands(subparsers: Any) -> None:
    """Add the organizer's subcommands to ``unisono``'s subparsers."""
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--server",
        default=os.environ.get("UNISONO_SERVER", DEFAULT_SERVER),
        help=f"the server's URL (default: $UNISONO_SERVER or {DEFAULT_SERVER})",
    )
    where.add_argument(
        "--data-dir", type=Path, default=Path("var"), help="where `unisono serve` keeps organizer-token (default: ./var)"
    )
    common = argparse.ArgumentParser(add_help=False, parents=[where])
    common.add_argument(
        "--token",
        default=os.environ.get("UNISONO_TOKEN"),
        help="the organizer token (default: $UNISONO_TOKEN, else the one in DATA_DIR/organizer-token)",
    )

    def schedule_parser(name: str, help_text: str) -> None:
        parser = subparsers.add_parser(name, parents=[common], help=help_text)
        when = parser.add_mutually_exclusive_group(required=True)
        when.add_argument("--in", dest="in_s", type=_duration_arg, metavar="DURATION", help="e.g. 10s, 2m, 1m30s, 1h or 90")
        when.add_argument("--at", metavar="TIME", help="HH:MM[:SS] today (local time), or an ISO 8601 datetime with offset")
        parser.add_argument("--yes", action="store_true", help="start even if too few devices are ready")

    schedule_parser("start", "schedule the show on the running server")
    schedule_parser("reschedule", "move the scheduled start to another time")
    subparsers.add_parser("abort", parents=[common], help="stop the show on every device")
    p_status = subparsers.add_parser("status", parents=[common], help="devices, groups, sync and readiness, as a table")
    p_status.add_argument("--json", action="store_true", help="print the raw JSON of /api/status")
    p_announce = subparsers.add_parser("announce", parents=[common], help="show a text on every participant page")
    p_announce.add_argument("text", nargs="+", help="the announcement (the words are joined by spaces)")
    subparsers.add_parser("token", parents=[where], help="print the organizer token and console URL (on the server machine)")

