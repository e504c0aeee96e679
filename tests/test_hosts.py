"""Who can reach the app: the Host allow-list against DNS rebinding, and the token when shared.

Unit tests of core/hosts.py, a check that app.py and every page ask first, and the real server in
Debian's Chromium: a page whose name points at 127.0.0.1 (`--host-resolver-rules`) is refused
before anything touches the store, loopback and allowed names are served, and a server bound to
0.0.0.0 serves only sessions that show the token. (AppTest cannot send request headers, so the
Streamlit side is tested through the real server only.)
"""

from __future__ import annotations

import ast
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from core import hosts
from core.hosts import (
    AccessSettings,
    access_settings,
    decide,
    host_allowed,
    is_loopback_address,
    launch_plan,
    parse_host,
    tokens_match,
)
from tests.conftest import ROOT
from tests.helpers_browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    free_port,
    running_app,
    streamlit_command,
)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("localhost", ("localhost", None)),
        ("LocalHost:8501", ("localhost", 8501)),
        ("localhost.:8501", ("localhost", 8501)),
        ("127.0.0.1:65535", ("127.0.0.1", 65535)),
        ("[::1]:8501", ("::1", 8501)),
        ("[0:0:0:0:0:0:0:1]", ("::1", None)),
        ("[::FFFF:127.0.0.1]", ("::ffff:7f00:1", None)),
        ("My-Box.lan:80", ("my-box.lan", 80)),
        ("xn--bcher-kva.example", ("xn--bcher-kva.example", None)),
    ],
)
def test_parse_host_normalises_names_addresses_and_ports(value, expected):
    assert parse_host(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        " ",
        "evil.example:",
        "evil.example:abc",
        "evil.example:0",
        "evil.example:65536",
        "evil.example:+80",
        "localhost:8501:1",
        "::1",  # IPv6 only in brackets
        "[::1",
        "[::1]x",
        "[::1]:",
        "[fe80::1%25eth0]",
        "[not-an-address]",
        "user@localhost",
        "localhost/path",
        "local host",
        "-bad.example",
        "a..example",
        "ｌocalhost",  # fullwidth l
        "\u212aevil.example",  # Kelvin sign, lower-cases to ASCII k
        "999.0.0.1",
        "127.1",  # browsers send 127.0.0.1
        "a" * 64 + ".example",
    ],
)
def test_malformed_hosts_do_not_parse_and_are_refused(value):
    assert parse_host(value) is None
    assert not host_allowed(value, [("evil.example", None), ("localhost", None)])


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost:8501",
        "LOCALHOST:8501",
        "app.localhost:8501",
        "127.0.0.1",
        "127.0.0.1:8501",
        "127.255.0.9:1",
        "[::1]",
        "[::1]:8501",
        "[::ffff:127.0.0.1]:8501",
    ],
)
def test_loopback_hosts_are_served(host):
    assert host_allowed(host)


@pytest.mark.parametrize(
    "host",
    [
        "evil.example:8501",
        "localhost.evil.example",
        "evillocalhost",
        "127.0.0.1.evil.example",
        "128.0.0.1",
        "10.0.0.1:8501",
        "0.0.0.0:8501",
        "[::]:8501",
        "[::2]",
        "[::ffff:10.0.0.1]",
    ],
)
def test_other_hosts_are_refused(host):
    assert not host_allowed(host)


def test_allowed_hosts_come_from_the_flag_and_the_environment():
    settings = access_settings(
        ["--db", "ws.duckdb", "--allow-host", "Trusted.Example", "--allow-host", "box:9000"],
        {"INFOPRUNE_ALLOW_HOSTS": " also.example , ,not a host,BOX:9000"},
    )
    assert settings.allowed_hosts == (
        ("trusted.example", None),
        ("box", 9000),
        ("also.example", None),
    )
    allowed = settings.allowed_hosts
    assert host_allowed("trusted.example:8501", allowed)
    assert host_allowed("TRUSTED.example", allowed)
    assert host_allowed("also.example:1", allowed)
    assert host_allowed("box:9000", allowed)
    assert not host_allowed("box:8501", allowed)  # an entry with a port allows only that port
    assert not host_allowed("sub.trusted.example", allowed)
    assert not host_allowed("evil.example", allowed)
    assert access_settings([], {}).allowed_hosts == ()


def test_token_from_the_flag_else_the_environment():
    assert access_settings(["--token", "a"], {"INFOPRUNE_TOKEN": "b"}).token == "a"
    assert access_settings(["--db", "x"], {"INFOPRUNE_TOKEN": "b"}).token == "b"
    assert access_settings([], {"INFOPRUNE_TOKEN": ""}).token is None
    assert access_settings(["--tok", "a"], {}).token is None  # no abbreviations


def test_tokens_compare_in_constant_time(monkeypatch):
    calls = []
    real = hosts.hmac.compare_digest
    monkeypatch.setattr(hosts.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    assert tokens_match("s3cret", "s3cret")
    assert not tokens_match("s3cre", "s3cret")
    assert not tokens_match("sécret", "s3cret")
    assert len(calls) == 3
    assert not tokens_match("", "")
    assert not tokens_match(None, "s3cret")
    assert not tokens_match("s3cret", None)


@pytest.mark.parametrize(
    "address, loopback",
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        (None, False),  # unset: Streamlit listens on every interface
        ("", False),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("mybox", False),
    ],
)
def test_bind_addresses(address, loopback):
    assert is_loopback_address(address) is loopback


def test_decide_on_a_loopback_server_checks_the_host():
    settings = AccessSettings((("trusted.example", None),))
    ok = decide(settings, host="localhost:8501", server_address="127.0.0.1")
    assert ok.allowed and not ok.message
    assert decide(settings, host="trusted.example:8501", server_address="127.0.0.1").allowed

    refused = decide(settings, host="Evil.Example:8501", server_address="127.0.0.1")
    assert not refused.allowed
    assert "does not answer to host 'evil.example:8501'" in refused.message
    assert "Open it at http://127.0.0.1:8501" in refused.message
    assert "--allow-host evil.example" in refused.message
    assert "INFOPRUNE_ALLOW_HOSTS=evil.example" in refused.message

    ipv6 = decide(settings, host="evil.example", server_address="::1", server_port=9000)
    assert "http://[::1]:9000" in ipv6.message
    garbage = decide(settings, host="<script>", server_address="localhost")
    assert not garbage.allowed and "<script>" not in garbage.message
    assert "http://localhost:8501" in garbage.message
    assert not decide(settings, host=None, server_address="127.0.0.1").allowed


def test_decide_on_a_shared_server_needs_the_token():
    no_token = decide(AccessSettings(), host="127.0.0.1:8501", server_address="0.0.0.0")
    assert not no_token.allowed
    assert "INFOPRUNE_TOKEN" in no_token.message and "make run HOST=0.0.0.0" in no_token.message
    assert not decide(AccessSettings(), host="localhost", server_address=None).allowed

    settings = AccessSettings(token="s3cret")
    missing = decide(settings, host="localhost:8501", server_address="0.0.0.0")
    assert not missing.allowed and "?token=" in missing.message and "wrong" not in missing.message
    wrong = decide(settings, host="localhost", server_address="0.0.0.0", given_token="guess")
    assert not wrong.allowed and "wrong" in wrong.message and "s3cret" not in wrong.message
    right = decide(settings, host="evil.example", server_address="0.0.0.0", given_token="s3cret")
    assert right.allowed and right.token_ok  # the token is what a rebinding page cannot know
    later = decide(settings, host="box:8501", server_address="0.0.0.0", verified=True)
    assert later.allowed and later.token_ok


def test_a_token_also_admits_any_host_on_a_loopback_server():
    settings = AccessSettings(token="s3cret")
    assert decide(
        settings, host="tunnel.example", server_address="127.0.0.1", given_token="s3cret"
    ).allowed
    assert not decide(settings, host="tunnel.example", server_address="127.0.0.1").allowed
    # A wrong token changes nothing for a loopback name.
    assert decide(settings, host="localhost", server_address="127.0.0.1", given_token="x").allowed


def test_launch_plan_makes_a_token_only_beyond_loopback():
    base = ["streamlit", "run", "app.py", "--server.port", "8600"]
    env, message = launch_plan(base + ["--server.address", "127.0.0.1"], {"PATH": "/bin"})
    assert env == {"PATH": "/bin"} and message == ""
    assert launch_plan(base, {}) == ({}, "")  # config.toml's 127.0.0.1

    env, message = launch_plan(base + ["--server.address", "0.0.0.0"], {})
    token = env["INFOPRUNE_TOKEN"]
    assert len(token) >= 32
    assert f"http://{socket.gethostname()}:8600/?token={token}" in message
    again, _ = launch_plan(base + ["--server.address", "0.0.0.0"], {})
    assert again["INFOPRUNE_TOKEN"] != token

    env, message = launch_plan(["streamlit", "run", "app.py", "--server.address=10.1.2.3"], {})
    assert f"http://10.1.2.3:8501/?token={env['INFOPRUNE_TOKEN']}" in message
    env, _ = launch_plan(["streamlit", "run", "app.py"], {"STREAMLIT_SERVER_ADDRESS": "0.0.0.0"})
    assert "INFOPRUNE_TOKEN" in env


def test_launch_plan_keeps_a_token_the_user_set():
    command = ["streamlit", "run", "app.py", "--server.address", "0.0.0.0"]
    env, message = launch_plan(command, {"INFOPRUNE_TOKEN": "mine"})
    assert env["INFOPRUNE_TOKEN"] == "mine" and "mine" not in message and "?token=" in message
    env, message = launch_plan(command + ["--", "--token", "flagged"], {})
    assert "INFOPRUNE_TOKEN" not in env and "flagged" not in message
    # --server.address after `--` is the app's argument, not Streamlit's.
    assert launch_plan(["streamlit", "run", "app.py", "--", "--server.address", "0.0.0.0"], {}) == (
        {},
        "",
    )


def test_launcher_prints_the_link_and_execs_the_command(monkeypatch, capsys):
    ran = []
    monkeypatch.delenv("INFOPRUNE_TOKEN", raising=False)
    monkeypatch.setattr(os, "execvpe", lambda file, args, env: ran.append((file, args, env)))
    hosts.main(["streamlit", "run", "app.py", "--server.address", "0.0.0.0"])
    ((file, args, env),) = ran
    assert file == "streamlit" and args[-1] == "0.0.0.0"
    assert f"?token={env['INFOPRUNE_TOKEN']}" in capsys.readouterr().out
    hosts.main(["streamlit", "run", "app.py", "--server.address", "127.0.0.1"])
    assert "INFOPRUNE_TOKEN" not in ran[1][2] and capsys.readouterr().out == ""


def test_make_run_goes_through_the_launcher():
    shown = subprocess.run(
        ["make", "-n", "run", "HOST=0.0.0.0", "PORT=8765"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = " ".join(shown.replace("\\\n", " ").split())
    assert "-m core.hosts .venv/bin/streamlit run app.py --server.address 0.0.0.0" in line
    assert "--server.port 8765" in line


def first_statements(path: Path) -> list[str]:
    """Module-level statements of PATH after its docstring and imports, as source."""
    body = ast.parse(path.read_text()).body
    return [
        ast.unparse(node)
        for node in body
        if not isinstance(node, ast.Import | ast.ImportFrom)
        and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
    ]


@pytest.mark.parametrize("page", sorted(p.name for p in (ROOT / "pages").glob("[0-9]*.py")))
def test_every_page_asks_first(page):
    # A fresh server asked for a page URL first runs that file directly, without app.py.
    assert first_statements(ROOT / "pages" / page)[0] == "require_access()"


def test_app_asks_before_the_first_start_ingest_and_any_page():
    statements = first_statements(ROOT / "app.py")
    calls = [s for s in statements if not s.startswith(("def ", "@", "class "))]
    asked = calls.index("require_access()")
    ingest = next(i for i, s in enumerate(calls) if "ensure_sample_dataset(" in s)
    assert asked < ingest < calls.index("nav.run()")


# --- the real server in a real browser ---------------------------------------------------------

needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"),
    reason=f"{CHROMIUM} is not installed (`make browser` installs Debian's chromium)",
)
MAPPED = ["evil.example", "trusted.example", "also.example"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=60_000)  # a loaded CI machine can take seconds per rerun
    rules = ", ".join(f"MAP {name} 127.0.0.1" for name in MAPPED)
    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, f"--host-resolver-rules={rules}"]
        )
        yield chromium
        chromium.close()


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1200, "height": 700})
    page.set_default_timeout(60_000)
    page.goto(url)
    return page


def expect_refused(page, text: str, shot: str | None = None) -> None:
    from playwright.sync_api import expect

    expect(page.get_by_text(text)).to_be_visible()
    page.wait_for_load_state("networkidle")
    expect(page.locator("h1")).to_have_count(0)  # no page title: nothing of the app ran
    expect(page.get_by_text("Datasets in this workspace")).to_have_count(0)
    expect(page.locator("[data-testid=stSidebarNav]")).to_have_count(0)
    if shot:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / shot)


def expect_home(page, shot: str | None = None) -> None:
    from playwright.sync_api import expect

    expect(page.get_by_text("Datasets in this workspace")).to_be_visible()
    expect(page.locator("[data-testid=stAlert]", has_text="does not answer")).to_have_count(0)
    if shot:
        expect(page.get_by_role("link", name="Add a dataset")).to_be_visible()
        page.wait_for_load_state("networkidle")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / shot)


@pytest.mark.slow
@needs_chromium
def test_a_rebound_name_is_refused_and_loopback_and_allowed_names_are_served(
    browser, tmp_path, monkeypatch
):
    monkeypatch.setenv("INFOPRUNE_ALLOW_HOSTS", "also.example")
    monkeypatch.delenv("INFOPRUNE_TOKEN", raising=False)
    db = tmp_path / "ws.duckdb"
    port = free_port()
    command = streamlit_command(port, app_args=["--db", str(db), "--allow-host", "trusted.example"])
    with running_app(command, port, log=tmp_path / "log"):
        # First request to a fresh server, for a page: Streamlit runs that page file directly.
        page = open_page(browser, f"http://evil.example:{port}/Prune_and_Export")
        expect_refused(page, f"does not answer to host 'evil.example:{port}'")
        page.close()
        page = open_page(browser, f"http://evil.example:{port}/")
        expect_refused(page, "--allow-host evil.example", shot="hosts-refused.png")
        page.close()
        assert not db.exists(), "a refused request reached the store (first-start ingest)"

        for host in ["trusted.example", "also.example", "localhost", "127.0.0.1"]:
            page = open_page(browser, f"http://{host}:{port}/")
            expect_home(page, shot="hosts-served.png" if host == "127.0.0.1" else None)
            page.close()
        assert db.exists()


@pytest.mark.slow
@needs_chromium
def test_a_shared_server_serves_only_sessions_with_the_token(browser, tmp_path, monkeypatch):
    from playwright.sync_api import expect

    monkeypatch.setenv("INFOPRUNE_TOKEN", "x")
    port = free_port()
    command = streamlit_command(port, address="0.0.0.0", app_args=["--db", str(tmp_path / "w")])
    with running_app(command, port, log=tmp_path / "log"):
        page = open_page(browser, f"http://127.0.0.1:{port}/")
        expect_refused(page, "must show its access token once", shot="hosts-token-missing.png")
        page.goto(f"http://127.0.0.1:{port}/?token=y")
        expect_refused(page, "The access token in this link is wrong")
        page.goto(f"http://evil.example:{port}/?token=x")  # the token beats any rebinding
        expect_home(page)
        page.goto(f"http://127.0.0.1:{port}/?token=x")
        expect_home(page)
        page.locator("[data-testid=stSidebarNav]").get_by_text("Data", exact=True).click()
        expect(page.locator("h1", has_text="Data")).to_be_visible()
        expect(page).to_have_url(re.compile(r"/Data\?token=x$"))  # kept, so a reload works
        page.reload()
        expect(page.locator("h1", has_text="Data")).to_be_visible()
        page.close()


@pytest.mark.slow
@needs_chromium
def test_a_shared_server_without_a_token_serves_nobody(browser, tmp_path, monkeypatch):
    monkeypatch.delenv("INFOPRUNE_TOKEN", raising=False)
    port = free_port()
    command = streamlit_command(port, address="0.0.0.0", app_args=["--db", str(tmp_path / "w")])
    with running_app(command, port, log=tmp_path / "log"):
        page = open_page(browser, f"http://127.0.0.1:{port}/?token=anything")
        expect_refused(page, "has no access token, so it serves nobody", shot="hosts-no-token.png")
        page.close()
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
@needs_chromium
def test_the_launcher_prints_a_link_that_opens_the_shared_app(browser, tmp_path, monkeypatch):
    monkeypatch.delenv("INFOPRUNE_TOKEN", raising=False)
    port = free_port()
    app = streamlit_command(port, address="0.0.0.0", app_args=["--db", str(tmp_path / "w")])
    log = tmp_path / "log"
    with running_app([sys.executable, "-m", "core.hosts", *app], port, log=log):
        link = re.search(rf"http://\S+:{port}/\?token=(\S+)", log.read_text())
        assert link, log.read_text()
        page = open_page(browser, f"http://127.0.0.1:{port}/")
        expect_refused(page, "must show its access token once")
        page.goto(f"http://127.0.0.1:{port}/?token={link.group(1)}")
        expect_home(page)
        page.close()
