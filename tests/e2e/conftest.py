"""Browser journeys: Debian's Chromium (never a downloaded browser) through Playwright, with
fake camera, an espeak-ng WAV as every microphone, against a real gateway and nats-server.

One browser for the package, one context (profile) per person, torn down after each test.
"""

import shutil
import subprocess
import tempfile
import wave
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Playwright, expect, sync_playwright

from gateway.static import DEFAULT_DIST
from tests.e2e.people import INIT_SCRIPT, Person
from tests.support.call_stack import CallStack
from tests.support.gateways import OPERATOR_TOKEN, GatewayCluster
from tests.support.nats_server import NatsServer

CHROMIUM = "/usr/bin/chromium"

# What a person waits for (a prompt, a tile, a message) may take seconds on two busy cores.
expect.set_options(timeout=20_000)

#: Slower timers than the integration tests: a browser on two busy cores needs seconds to
#: answer a ring or come back from a drop.
E2E_ENV = {
    "CALL_RING_TIMEOUT_S": "30",
    "CALL_HEARTBEAT_TIMEOUT_S": "20",
    "CALL_RECONNECT_GRACE_S": "20",
    "STUN_URLS": "",
    "TURN_URLS": "",
}

#: The selector as deployed (pre-warm on), with a short hold before going back to P2P.
E2E_SELECTOR_ENV = {"SELECTOR_PREWARM": "true", "SELECTOR_TO_P2P_HOLD_S": "2"}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[FAILED_KEY] = report.failed
    return report


FAILED_KEY = pytest.StashKey[bool]()


@pytest.fixture(scope="package")
def speech_wav() -> Iterator[Path]:
    """A spoken English sentence (espeak-ng), the microphone of every person."""
    folder = Path(tempfile.mkdtemp(prefix="e2e-speech-"))
    path = folder / "speech.wav"
    subprocess.run(
        [
            "espeak-ng",
            "-v",
            "en",
            "-s",
            "150",
            "-w",
            str(path),
            "Hello everyone. This is a test call with live captions. Can you hear me well?",
        ],
        check=True,
        capture_output=True,
    )
    _pad_with_silence(path, seconds=1.5)
    yield path
    shutil.rmtree(folder, ignore_errors=True)


def _pad_with_silence(path: Path, seconds: float) -> None:
    """Chromium loops the file as the microphone: a pause after the sentence lets voice
    activity detection end each utterance (a person breathes, too)."""
    with wave.open(str(path), "rb") as src:
        params = src.getparams()
        frames = src.readframes(src.getnframes())
    silence = b"\x00" * int(params.framerate * seconds) * params.sampwidth * params.nchannels
    with wave.open(str(path), "wb") as out:
        out.setparams(params)
        out.writeframes(frames + silence)


@pytest.fixture(scope="package")
def gateway(nats_server: NatsServer) -> Iterator[CallStack]:
    """The system a browser meets: a gateway, a mode selector and a media node (GROUP calls
    of three move to the SFU and back, as in production), pre-warm on."""
    if not (DEFAULT_DIST / "index.html").is_file():
        pytest.fail("the web client is not built: run `make web` (make test builds it)")
    stack = CallStack(
        nats_server.url,
        gateways=1,
        selectors=1,
        media_nodes=1,
        env=E2E_ENV,
        selector_env=E2E_SELECTOR_ENV,
    ).start_all()
    yield stack
    stack.stop()


@pytest.fixture(scope="package")
def playwright_driver() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="package")
def browser(playwright_driver: Playwright, speech_wav: Path) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: tools/bootstrap.sh installs Debian's chromium")
    browser = playwright_driver.chromium.launch(
        executable_path=CHROMIUM,
        # headless=True would add --headless (old mode) and --mute-audio; the new headless
        # mode, asked for explicitly, keeps audio and the real rendering path.
        headless=False,
        args=[
            "--headless=new",
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-audio-capture={speech_wav}",
            "--autoplay-policy=no-user-gesture-required",
            "--disable-gpu",
        ],
    )
    yield browser
    browser.close()


PeopleFactory = Callable[..., Person]


@pytest.fixture
def people(
    browser: Browser, gateway: GatewayCluster, request: pytest.FixtureRequest
) -> Iterator[PeopleFactory]:
    """``people("alice")`` opens a new browser profile at the gateway for one person."""
    opened: list[Person] = []
    elsewhere: list[str] = []

    def open_person(name: str, base_url: str | None = None) -> Person:
        origin = base_url or gateway.urls[0]
        context = browser.new_context(
            base_url=origin,
            permissions=["camera", "microphone"],
            viewport={"width": 1280, "height": 860},
        )
        context.set_default_timeout(20_000)
        context.add_init_script(INIT_SCRIPT)
        page = context.new_page()
        person = Person(name, context, page)
        page.on("pageerror", lambda exc: person.errors.append(str(exc)))
        page.on("console", lambda msg: person.console.append(f"{msg.type}: {msg.text}"))

        def check_origin(url: str) -> None:
            # Nothing may be fetched from anywhere but the page's own origin (no CDN, fonts).
            if url.startswith(("http:", "https:", "ws:", "wss:")) and _origin(url) != _origin(
                origin
            ):
                elsewhere.append(url)

        context.on("request", lambda request: check_origin(request.url))
        page.on("websocket", lambda ws: check_origin(ws.url))
        opened.append(person)
        return person

    yield open_person
    failed = request.node.stash.get(FAILED_KEY, False)
    for person in opened:
        # What each page said (the client logs its media path changes), kept as an artifact.
        person.save_console(f"{'FAILED-' if failed else ''}{request.node.name}")
        if failed and not person.page.is_closed():
            # What each person was looking at when the journey failed.
            person.screenshot(f"FAILED-{request.node.name}")
    refused: dict[str, object] = {}
    for person in opened:
        if not person.page.is_closed() and person.page.url.startswith("http"):
            violations = person.page.evaluate("() => window.__meeshy ? window.__meeshy.csp : []")
            if violations:
                refused[person.name] = violations
        person.context.close()
    assert not refused, f"the page broke its own Content-Security-Policy: {refused}"
    uncaught = {p.name: p.errors for p in opened if p.errors}
    assert not uncaught, f"uncaught errors in the page: {uncaught}"
    assert not elsewhere, f"the page fetched from another origin: {elsewhere}"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}"


def put_conversation(
    gateway: GatewayCluster,
    conversation_id: str,
    type_: str,
    members: dict[str, str],
    title: str,
) -> None:
    """Create a conversation through the operator endpoint (members: user id → role)."""
    resp = httpx.put(
        f"{gateway.urls[0]}/api/admin/conversations/{conversation_id}",
        json={
            "type": type_,
            "title": title,
            "members": [{"userId": u, "role": r} for u, r in members.items()],
        },
        headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
        timeout=10,
    )
    resp.raise_for_status()
