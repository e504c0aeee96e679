"""Who may use the app: requests for a loopback or allowed Host, or sessions that show the token.

Bound to 127.0.0.1, the app is still reachable from any web page the user visits: the page's own
name can be re-pointed at 127.0.0.1 (DNS rebinding), and the browser then lets that page drive the
app, which can read any file the user can and write where Export is told to. Such a request always
carries the attacker's name in its Host header, so the app answers only to names of this machine
(localhost, *.localhost, 127.0.0.0/8, [::1]) and to names the user allowed (`--allow-host NAME`,
$INFOPRUNE_ALLOW_HOSTS). Bound beyond loopback (`--server.address 0.0.0.0`), any machine can send
any Host, so every browser session must instead show a secret token once (`?token=...`).

`python -m core.hosts streamlit run app.py ...` is the launcher `make run` uses: when the address is
not loopback and no token was given it makes one and prints the link to open.
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import os
import re
import secrets
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

ENV_ALLOW_HOSTS = "INFOPRUNE_ALLOW_HOSTS"
ENV_TOKEN = "INFOPRUNE_TOKEN"
TOKEN_PARAM = "token"
DEFAULT_PORT = 8501

_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_PORT = re.compile(r":([0-9]{1,5})")
_WILDCARDS = ("", "0.0.0.0", "::")


@dataclass(frozen=True)
class AccessSettings:
    """What the user allowed: extra host names (name, port or None for any port) and the token."""

    allowed_hosts: tuple[tuple[str, int | None], ...] = ()
    token: str | None = None


@dataclass(frozen=True)
class Decision:
    """Serve this script run or not; `token_ok` when the session showed the right token."""

    allowed: bool
    message: str = ""
    token_ok: bool = False


def parse_host(value: str | None) -> tuple[str, int | None] | None:
    """(name, port) of a Host header, lower-cased and normalised; None when it is not a valid one.

    A name is DNS labels (letters, digits, '-', '_'); an IP address is IPv4 or bracketed IPv6. Only
    ASCII is accepted: browsers send international names as xn-- labels.
    """
    if not value or not value.isascii():
        return None
    value = value.strip().lower()
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket or "%" in name:
            return None
        try:
            name = str(ipaddress.IPv6Address(name))
        except ValueError:
            return None
    else:
        name, colon, port = value.partition(":")
        rest = colon + port
        name = name[:-1] if name.endswith(".") else name  # "localhost." is "localhost"
        if not name or len(name) > 253 or not all(_LABEL.fullmatch(p) for p in name.split(".")):
            return None
        if re.fullmatch(r"[0-9.]+", name):
            try:
                name = str(ipaddress.IPv4Address(name))
            except ValueError:
                return None
    if not rest:
        return name, None
    match = _PORT.fullmatch(rest)
    if not match or not 0 < int(match.group(1)) < 65536:
        return None
    return name, int(match.group(1))


def is_loopback_name(name: str) -> bool:
    """A parsed host name that only ever means this machine."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped:  # ::ffff:127.0.0.1
        ip = ip.ipv4_mapped
    return ip.is_loopback


def is_loopback_address(address: str | None) -> bool:
    """Whether the server's bind address (server.address) keeps it to this machine.

    Unset means every interface, as does 0.0.0.0 or ::; a name other than localhost may resolve to
    anything, so it counts as not loopback.
    """
    address = (address or "").strip().lower()
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    return bool(address) and is_loopback_name(address)


def access_settings(argv: Sequence[str], environ: Mapping[str, str]) -> AccessSettings:
    """Allowed hosts from `--allow-host NAME` (repeatable) and $INFOPRUNE_ALLOW_HOSTS (commas),
    and the token from `--token` or else $INFOPRUNE_TOKEN; the app's other arguments are ignored.

    An entry that is not a valid host name is dropped: no Host header could match it anyway.
    """
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--allow-host", action="append", default=[])
    parser.add_argument("--token")
    args, _ = parser.parse_known_args(list(argv))
    names = list(args.allow_host) + environ.get(ENV_ALLOW_HOSTS, "").split(",")
    allowed = tuple(dict.fromkeys(p for n in names if (p := parse_host(n.strip())) is not None))
    return AccessSettings(allowed, args.token or environ.get(ENV_TOKEN) or None)


def host_allowed(host: str | None, allowed_hosts: Sequence[tuple[str, int | None]] = ()) -> bool:
    """A Host header naming this machine, or a name (and port, if the entry has one) allowed."""
    parsed = parse_host(host)
    if parsed is None:
        return False
    name, port = parsed
    if is_loopback_name(name):
        return True
    return any(name == a_name and a_port in (None, port) for a_name, a_port in allowed_hosts)


def tokens_match(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison, so response times do not give the token away; no token never
    matches."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def url_host(address: str) -> str:
    """ADDRESS as the host part of a URL (IPv6 in brackets)."""
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def decide(
    settings: AccessSettings,
    *,
    host: str | None,
    server_address: str | None,
    server_port: int = DEFAULT_PORT,
    given_token: str | None = None,
    verified: bool = False,
) -> Decision:
    """Whether to serve one script run, and what to tell a refused one.

    A session that showed the configured token (now, or `verified` earlier) is served whatever its
    Host: the token is what a rebinding page cannot know. Otherwise a server bound beyond loopback
    refuses; one bound to loopback serves loopback and allowed hosts.
    """
    if settings.token and (verified or tokens_match(given_token, settings.token)):
        return Decision(True, token_ok=True)
    shared = not is_loopback_address(server_address)
    where = (server_address or "0.0.0.0").strip().strip("[]")
    if shared and not settings.token:
        return Decision(
            False,
            f"This infoprune server listens on {where}, beyond this machine, but has no access "
            f"token, so it serves nobody. Restart it with `make run HOST={where}`, which makes "
            f"a token and prints the link to open, or set {ENV_TOKEN}=SECRET (or pass "
            "`-- --token SECRET`) and open this address with `?token=SECRET` at the end.",
        )
    if shared:
        wrong = "The access token in this link is wrong. " if given_token else ""
        return Decision(
            False,
            f"{wrong}This infoprune server is shared beyond this machine, so each browser session "
            "must show its access token once: open the link printed when the server started "
            "(it ends in `?token=...`), or add `?token=` and the token to this address.",
        )
    if host_allowed(host, settings.allowed_hosts):
        return Decision(True)
    home = f"http://{url_host(server_address.strip().strip('[]'))}:{server_port}"
    parsed = parse_host(host)
    if parsed is None:
        return Decision(
            False,
            "This infoprune server does not answer to a request without a valid Host header. "
            f"Open it at {home}.",
        )
    shown = url_host(parsed[0]) + (f":{parsed[1]}" if parsed[1] else "")
    return Decision(
        False,
        f"This infoprune server does not answer to host '{shown}'. Open it at {home} instead. "
        f"If you trust that name, restart the server with `-- --allow-host {parsed[0]}` at the "
        f"end of its command line, or with {ENV_ALLOW_HOSTS}={parsed[0]} in its environment."
        "\n\nWhy: it answers only to names of this machine, so that a web page you visit cannot "
        "point its own name at this address (DNS rebinding) and use the app.",
    )


def _option(command: Sequence[str], name: str) -> str | None:
    for i, arg in enumerate(command):
        if arg == "--":
            break
        if arg == name and i + 1 < len(command):
            return command[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def launch_plan(command: Sequence[str], environ: Mapping[str, str]) -> tuple[dict[str, str], str]:
    """The environment to run COMMAND (`streamlit run app.py [options] [-- app args]`) with, and
    what to print first.

    Bound beyond loopback with no token given, a fresh token goes into $INFOPRUNE_TOKEN and the
    message is the link to open; the app itself refuses such a server without a token anyway.
    """
    env = dict(environ)
    address = _option(command, "--server.address") or environ.get("STREAMLIT_SERVER_ADDRESS")
    if address is None or is_loopback_address(address):  # None: .streamlit/config.toml's 127.0.0.1
        return env, ""
    port = _option(command, "--server.port") or environ.get("STREAMLIT_SERVER_PORT")
    port = port or str(DEFAULT_PORT)
    app_args = list(command[list(command).index("--") + 1 :]) if "--" in command else []
    given = access_settings(app_args, environ).token
    host = socket.gethostname() if address.strip("[]") in _WILDCARDS else url_host(address)
    if given:
        return env, (
            f"infoprune listens on {url_host(address)}:{port}, beyond this machine: each browser "
            f"session must show the token you set, e.g. http://{host}:{port}/?token=YOUR_TOKEN"
        )
    env[ENV_TOKEN] = secrets.token_urlsafe(24)
    return env, (
        f"infoprune listens on {url_host(address)}:{port}, beyond this machine, so each browser "
        f"session must show an access token once. Open:\n\n    http://{host}:{port}/?token="
        f"{env[ENV_TOKEN]}\n\n(A new token each start; set {ENV_TOKEN} to keep one.)\n"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Print the link (if a token was made) and replace this process with the command."""
    command = list(sys.argv[1:] if argv is None else argv)
    if not command:
        sys.exit("usage: python -m core.hosts streamlit run app.py [options] [-- app args]")
    env, message = launch_plan(command, os.environ)
    if message:
        print(message, flush=True)
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    main()
