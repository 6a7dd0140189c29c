"""The log a simulated launch writes, phase by phase, in the shape of SkyPilot 0.14.1's.

Lines follow sky/execution.py and the provisioner: the optimizer's table, "Launching on ...",
"Instance is up.", "Cluster launched", file sync, setup, "Job submitted". The control plane
reads its progress from these, so they have to be as plausible as the real ones.
"""

from __future__ import annotations

from devtools.skypilot_sim.taskspec import TaskSpec


def optimizer_lines(spec: TaskSpec) -> list[str]:
    accel = ", ".join(f"{name}:{count}" for name, count in spec.accelerators.items()) or "-"
    rule = "-" * 86
    return [
        f"Considered resources ({spec.num_nodes} node{'s' if spec.num_nodes > 1 else ''}):",
        rule,
        " INFRA                 INSTANCE        vCPUs   Mem(GB)   GPUS         COST ($)   CHOSEN",
        rule,
        f" {spec.cloud} ({spec.region})    sim-instance    8       32        {accel:<12} "
        "1.00          ✔",
        rule,
    ]


def provisioning_lines(spec: TaskSpec, cluster: str) -> list[str]:
    zone = spec.zone or f"{spec.region}a"
    accel = ", ".join(f"{name}:{count}" for name, count in spec.accelerators.items())
    return [
        f"Launching a new cluster '{cluster}'. Proceed? [Y/n]: Y",
        f"⚙︎ Launching on {spec.cloud} {spec.region} ({zone}){f' ({accel})' if accel else ''}.",
    ]


def provisioned_lines(cluster: str) -> list[str]:
    return [
        "└── Instance is up.",
        f"✓ Cluster launched: {cluster}.  View logs: sky logs --provision {cluster}",
        "⚙︎ Syncing files.",
        "⚙︎ Running setup on 1 VM.",
        "Setup: installing vLLM…",
    ]


def submitted_lines(cluster: str, job_id: int) -> list[str]:
    return [
        f"✓ Setup completed.  View logs: sky logs --setup {cluster}",
        f"⚙︎ Job submitted, ID: {job_id}",
    ]


def reused_lines(cluster: str, job_id: int) -> list[str]:
    return [
        f"Cluster '{cluster}' is up. Launching on the existing cluster.",
        f"⚙︎ Job submitted, ID: {job_id}",
    ]
