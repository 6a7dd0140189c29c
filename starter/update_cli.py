"""``python -m starter update``: roll a new node spec out to a deployment and follow it.

Prints one JSON line per change of the rollout's progress and exits 0 once the new spec
serves everywhere, 1 when the deployment rolled back (the reason is printed), 4 when the
wait ran out with the rollout still going (it keeps going; query its status).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from starter.api import ControlPlane
from workflows.models import DeploymentView, UpdateDeploymentRequest

EXIT_DONE, EXIT_ROLLED_BACK, EXIT_STILL_ROLLING = 0, 1, 4


def add_command(sub: Any) -> None:
    update = sub.add_parser("update", help="roll a new node spec out to a deployment")
    update.add_argument("--workflow-id", required=True)
    update.add_argument("--model")
    update.add_argument("--vllm-version")
    update.add_argument("--torch-version")
    update.add_argument("--gpu", help="TYPE:COUNT, e.g. H100:1")
    update.add_argument("--provider")
    update.add_argument("--region")
    update.add_argument("--spot", action=argparse.BooleanOptionalAction, default=None)
    update.add_argument("--max-surge", type=int, default=1)
    update.add_argument("--max-unavailable", type=int, default=0)
    update.add_argument(
        "--deadline", type=float, metavar="SECONDS", help="roll back if not done by then"
    )
    update.add_argument("--wait", type=float, default=3600.0, metavar="SECONDS")


def request(
    args: argparse.Namespace, parse_gpu: Callable[[str], tuple[str, int]]
) -> UpdateDeploymentRequest:
    """Validated before anything is sent: a bad value names its flag's field."""
    gpu_type, gpu_count = parse_gpu(args.gpu) if args.gpu else (None, None)
    return UpdateDeploymentRequest(
        model=args.model,
        vllm_version=args.vllm_version,
        torch_version=args.torch_version,
        gpu_type=gpu_type,
        gpu_count=gpu_count,
        provider=args.provider,
        region=args.region,
        spot=args.spot,
        max_surge=args.max_surge,
        max_unavailable=args.max_unavailable,
        deadline_s=args.deadline,
    )


def progress(view: DeploymentView) -> dict[str, Any]:
    rollout = view.rollout
    return {
        "revision": view.revision,
        "desired": view.desired_replicas,
        "serving": view.serving_replicas,
        **(rollout.model_dump(mode="json") if rollout else {}),
    }


async def run(cp: ControlPlane, args: argparse.Namespace, update: UpdateDeploymentRequest) -> int:
    view = await cp.update_deployment(args.workflow_id, update)
    last: dict[str, Any] | None = None

    def show(current: DeploymentView) -> None:
        nonlocal last
        line = progress(current)
        if line != last:
            print(json.dumps(line), flush=True)
            last = line

    show(view)
    final = await cp.wait_for_rollout(
        args.workflow_id, timeout=timedelta(seconds=args.wait), on_progress=show
    )
    if final.rollout is None or final.rollout.phase == "rolling":
        return EXIT_STILL_ROLLING
    return EXIT_DONE if final.rollout.phase == "done" else EXIT_ROLLED_BACK
