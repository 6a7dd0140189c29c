"""A headless Chromium driven over its DevTools pipe (``--remote-debugging-pipe``).

The web UI is a single-page app whose workflow page keeps long-polling the server, so
``chromium --screenshot`` never sees it idle. Over the pipe (fd 3 in, fd 4 out, NUL-separated
JSON, no websocket library needed) the script waits until the page shows what it expects and
then takes the picture.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

RELOAD_S = 15.0
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


class Browser:
    def __init__(self, chromium: str, profile: Path, width: int, height: int) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_pipe() -> None:  # in the child: the DevTools pipe is fds 3 (in) and 4 (out)
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        self.proc = subprocess.Popen(
            [
                chromium,
                *FLAGS,
                "--remote-debugging-pipe",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),
            preexec_fn=wire_pipe,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next_id = 0
        self._buffer = b""
        self.width, self.height = width, height

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its answer (events in between are skipped)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._read()
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer.get("result", {})
                return result

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed its DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        parsed: dict[str, Any] = json.loads(raw)
        return parsed

    def screenshot(
        self, url: str, out: Path | None, *, expect: list[str], timeout: float = 90
    ) -> None:
        """Open ``url``; once the page text contains every ``expect``, save a PNG (to ``out``)."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call(
            "Emulation.setDeviceMetricsOverride",
            session,
            width=self.width,
            height=self.height,
            deviceScaleFactor=1,
            mobile=False,
        )
        self.call("Page.bringToFront", session)
        self.call("Page.navigate", session, url=url)
        deadline = time.monotonic() + timeout
        reload_at = time.monotonic() + RELOAD_S
        check = " && ".join(f"document.body.innerText.includes({json.dumps(t)})" for t in expect)
        while True:
            shown = self.call("Runtime.evaluate", session, expression=f"!!document.body && {check}")
            if shown.get("result", {}).get("value") is True:
                break
            # A headless page draws frames only when asked: without them the UI's panels that
            # render on animation frames stay empty. A throw-away capture asks for one.
            self.call("Page.captureScreenshot", session, format="png")
            if time.monotonic() > deadline:
                text = self.call(
                    "Runtime.evaluate", session, expression="document.body.innerText.slice(-600)"
                )
                raise RuntimeError(f"{url} never showed {expect}: {text}")
            if time.monotonic() > reload_at:  # some panels load once ("press R for freshness")
                self.call("Page.reload", session)
                reload_at = time.monotonic() + RELOAD_S
            time.sleep(1.0)
        time.sleep(2.0)  # let the last fetches render
        if out is not None:
            data = self.call("Page.captureScreenshot", session, format="png")["data"]
            out.write_bytes(base64.b64decode(data))
        self.call("Target.closeTarget", targetId=target)

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, OSError):
            self.proc.kill()
        self.proc.wait(timeout=30)
        os.close(self._to_browser)
        os.close(self._from_browser)
