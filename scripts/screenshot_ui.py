#!/usr/bin/env python3
"""Take the README's web-UI screenshots in a real (headless) browser.

Brings up the local stack (devtools/devstack.py: Temporal dev server with its web UI and the
search attributes, Postgres, the simulator, the worker), launches three nodes for tenant ``acme``
(two run; one is held mid-launch by a slow simulated launch), then has Chromium photograph

- the workflow list filtered with ``Tenant='acme' AND NodeStatus='running'``
  (docs/web-ui-nodes.png), and
- the launching node's workflow page (User Metadata), with its summary and current details
  (docs/web-ui-node-details.png).

    .venv/bin/python scripts/screenshot_ui.py [--out docs] [--chromium PATH]

Chromium comes from Debian (``apt-get install -y chromium``); it runs with a fresh, empty
profile directory and no network access beyond the loopback stack.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
import urllib.parse
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

from cdp_pipe import Browser  # noqa: E402

from controlplane.config import load_settings  # noqa: E402
from controlplane.lifecycle import NodeStatus  # noqa: E402
from controlplane.spec import NodeSpec  # noqa: E402
from devtools.devstack import DevStack  # noqa: E402
from starter.api import ControlPlane  # noqa: E402
from starter.connection import connect  # noqa: E402

QUERY = "Tenant='acme' AND NodeStatus='running'"
WINDOW = (1500, 950)


def node(deployment: str, model: str, gpu: str) -> NodeSpec:
    return NodeSpec(
        tenant="acme",
        model=model,
        provider="aws",
        region="us-east-1",
        gpu_type=gpu,
        gpu_count=1,
        deployment=deployment,
    )


def chromium_binary(explicit: str | None) -> str:
    for candidate in (explicit, "chromium", "chromium-browser", "google-chrome"):
        if candidate and (found := shutil.which(candidate)):
            return found
    raise SystemExit(
        "no Chromium found: apt-get update && apt-get install -y chromium (or pass --chromium)"
    )


async def arrange(stack: DevStack) -> tuple[str, str]:
    """Two running nodes and one held mid-launch; the launching one's workflow and run ids."""
    settings = load_settings({"TEMPORAL_ADDRESS": stack.temporal_address})
    control = ControlPlane(await connect(settings), settings.temporal_task_queue)
    assert await control.labelled(), "the dev server should have the search attributes"
    stamp = time.strftime("%H%M%S")
    for model, gpu in (("NousResearch/Meta-Llama-3-8B-Instruct", "A100"), ("org/mistral-7b", "L4")):
        running = await control.launch_node(node(f"blue-{stamp}", model, gpu))
        await control.wait_for_node(
            running.workflow_id, until={NodeStatus.RUNNING}, timeout=timedelta(seconds=90)
        )
    assert stack.simulator is not None
    # The next launch stays in progress: provisioning for 30 s, then setting up for 10 minutes.
    stack.simulator.set_timings(launch_delay_s=60)
    launching = await control.launch_node(node(f"green-{stamp}", "Qwen/Qwen2.5-7B-Instruct", "L4"))
    for _ in range(120):
        view = await control.node_status(launching.workflow_id)
        if view.phase is not None and view.phase.value == "provisioning":
            stack.simulator.set_timings(launch_delay_s=1200)
        if view.phase is not None and view.phase.value == "setting_up":
            break
        await asyncio.sleep(0.5)
    print(f"launching: {launching.workflow_id} ({view.phase}: {view.progress})", flush=True)
    await asyncio.sleep(2)  # let the visibility store catch up with the NodeStatus upserts
    run_id = (await control.client.get_workflow_handle(launching.workflow_id).describe()).run_id
    return launching.workflow_id, run_id


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--chromium")
    args = parser.parse_args()
    chromium = chromium_binary(args.chromium)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="screenshot-stack-") as home:
        stack = DevStack(home=Path(home))
        try:
            stack.start_temporal()
            stack.start_database()
            stack.start_simulator()
            # A launch held for minutes must not hit the stack's 2-minute launch timeout while
            # the browser renders (a loaded machine makes headless Chromium slow).
            stack.start_worker({"SKYPILOT_LAUNCH_TIMEOUT": "30m"})
            shoot(stack, chromium, args.out)
        finally:
            stack.stop()
    return 0


def shoot(stack: DevStack, chromium: str, out: Path) -> None:
    launching, run_id = asyncio.run(arrange(stack))
    base = f"{stack.ui_url}/namespaces/default/workflows"
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        browser = Browser(chromium, Path(profile), *WINDOW)
        try:
            page = f"{base}/{urllib.parse.quote(launching)}/{run_id}"
            # Open the workflow page first (as a person would); its metadata tab then fills in.
            browser.screenshot(f"{page}/history", Path(profile) / "history.png", expect=[launching])
            browser.screenshot(
                f"{page}/user-metadata", out / "web-ui-node-details.png", expect=[launching]
            )
            listing = f"{base}?query={urllib.parse.quote(QUERY)}"
            browser.screenshot(
                listing, out / "web-ui-nodes.png", expect=["RUNNING", "node-cpn-acme"]
            )
        finally:
            browser.close()
    for name in ("web-ui-nodes.png", "web-ui-node-details.png"):
        print(f"wrote {out / name} ({(out / name).stat().st_size} bytes)", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
