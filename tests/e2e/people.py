"""People in browsers: one Chromium context per person, driven the way a person would.

Every wait is on something the page shows (a heading, a tile's state, a counter), with a
deadline; nothing sleeps for a fixed time. Video "playing" means frames decoded by WebRTC
(``getStats``, shown by the page on each tile) and frames presented by the ``<video>``
element, both still rising.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import BrowserContext, Locator, Page, expect

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

#: Counts camera/microphone prompts and marks the page, to tell a reload or a second
#: getUserMedia apart from a call that carried on; records Content-Security-Policy refusals
#: and the page's peer connections.
INIT_SCRIPT = """
(() => {
  window.__meeshy = { gum: 0, loadedAt: performance.timeOrigin, screens: [], csp: [] };
  document.addEventListener('securitypolicyviolation', (e) => {
    window.__meeshy.csp.push(`${e.violatedDirective} ${e.blockedURI}`);
  });
  // Every peer connection the page makes, so a test can break one (a fault, not a shortcut).
  const Native = window.RTCPeerConnection;
  window.__meeshy.pcs = [];
  if (Native) {
    window.RTCPeerConnection = class extends Native {
      constructor(...args) { super(...args); window.__meeshy.pcs.push(this); }
    };
  }
  const md = navigator.mediaDevices;
  if (md && md.getUserMedia) {
    const original = md.getUserMedia.bind(md);
    md.getUserMedia = (c) => { window.__meeshy.gum += 1; return original(c); };
  }
  document.addEventListener('DOMContentLoaded', () => {
    const main = document.getElementById('main');
    if (!main) return;
    new MutationObserver(() => {
      const s = main.dataset.screen;
      const list = window.__meeshy.screens;
      if (s && list[list.length - 1] !== s) list.push(s);
    }).observe(main, { attributes: true, attributeFilter: ['data-screen'] });
  });
})();
"""

#: Roles that must carry an accessible name in the accessibility snapshot.
NAMED_ROLES = (
    "button",
    "checkbox",
    "combobox",
    "textbox",
    "link",
    "radio",
    "switch",
    "slider",
    "spinbutton",
    "listbox",
    "menuitem",
    "tab",
    "meter",
    "dialog",
    "alertdialog",
)
_UNNAMED = re.compile(rf"^\s*- ({'|'.join(NAMED_ROLES)})(?=\s*(?:\[|:|$))", re.MULTILINE)

FRAME_TIMEOUT_MS = 30_000


def unnamed_controls(snapshot: str) -> list[str]:
    """Lines of an aria snapshot that show a control without an accessible name."""
    return [m.group(0).strip() for m in _UNNAMED.finditer(snapshot)]


@dataclass
class Person:
    name: str
    context: BrowserContext
    page: Page
    errors: list[str] = field(default_factory=list)
    #: The page's console, kept for the artifacts of a failed journey.
    console: list[str] = field(default_factory=list)

    # --- looking -------------------------------------------------------------------------
    def expect_screen(self, screen: str, timeout: float = 20_000) -> None:
        expect(self.page.locator("main")).to_have_attribute("data-screen", screen, timeout=timeout)

    def screenshot(self, test_name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{test_name}-{self.name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def save_console(self, test_name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{test_name}-{self.name}.console.txt"
        path.write_text("\n".join(self.console))
        return path

    def button(self, name: str) -> Locator:
        return self.page.get_by_role("button", name=name, exact=True)

    def tile(self, display_name: str) -> Locator:
        return self.page.locator(f'.tile[data-self="false"][aria-label="{display_name}"]')

    def banner(self) -> Locator:
        return self.page.locator("#banner")

    # --- doing ---------------------------------------------------------------------------
    def sign_in(self, user_id: str) -> None:
        self.page.goto("/")
        self.expect_screen("sign-in")
        self.page.get_by_label("User id").fill(user_id)
        self.button("Sign in").click()
        self.expect_screen("conversations")
        expect(self.page.locator(".conversation").first).to_be_visible(timeout=15_000)

    def start_call(self, title: str) -> None:
        self.button(f"Call {title}").click()
        self.expect_screen("pre-join")
        start = self.button("Start call")
        expect(start).to_be_enabled(timeout=20_000)
        start.click()
        self.expect_screen("call")

    def accept_incoming(self) -> None:
        dialog = self.page.get_by_role("alertdialog")
        expect(dialog).to_be_visible(timeout=20_000)
        dialog.get_by_role("button", name="Accept").click()
        self.expect_screen("call")

    def tab_to(self, target: Locator, max_presses: int = 60) -> None:
        """Press Tab until ``target`` has the keyboard focus (as a keyboard user would)."""
        for _ in range(max_presses):
            if target.evaluate("el => el === document.activeElement"):
                return
            self.page.keyboard.press("Tab")
        raise AssertionError(f"{self.name}: Tab never reached {target}")

    # --- media ---------------------------------------------------------------------------
    def frames(self, tile: Locator) -> tuple[int, int]:
        """(frames decoded per getStats, frames the <video> element presented)."""
        decoded = int(tile.get_attribute("data-frames-decoded") or 0)
        presented = int(
            tile.locator("video").evaluate("v => v.getVideoPlaybackQuality().totalVideoFrames")
        )
        return decoded, presented

    def expect_video_playing(self, display_name: str, rising_by: int = 10) -> tuple[int, int]:
        """The other's video decodes and shows, and keeps doing so; returns the counters."""
        tile = self.tile(display_name)
        expect(tile).to_be_visible(timeout=FRAME_TIMEOUT_MS)
        handle = tile.element_handle()
        self.page.wait_for_function(
            "t => Number(t.dataset.framesDecoded) > 0 && t.querySelector('video').videoWidth > 0",
            arg=handle,
            timeout=FRAME_TIMEOUT_MS,
        )
        decoded, presented = self.frames(tile)
        self.page.wait_for_function(
            """([t, d, p]) => Number(t.dataset.framesDecoded) >= d
                 && t.querySelector('video').getVideoPlaybackQuality().totalVideoFrames >= p
                 && !t.querySelector('video').paused""",
            arg=[handle, decoded + rising_by, presented + rising_by],
            timeout=FRAME_TIMEOUT_MS,
        )
        return self.frames(tile)

    def marker(self) -> dict[str, object]:
        value: dict[str, object] = self.page.evaluate("() => window.__meeshy")
        return value
