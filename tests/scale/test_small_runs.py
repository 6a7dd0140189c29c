"""The benchmark's and the chaos run's ``--small`` versions, for CI: correctness, never speed.

Each script runs as a subprocess (its own dev server, simulator, database and ``worker.py``)
and writes its JSON report; the tests assert the run completed, that every invariant and every
target was actually evaluated, and that the correctness parts hold. Timing targets are printed
by the benchmark (PASS/MISS) and are deliberately not asserted here. The invariant checks
themselves are also exercised on hand-made broken data, so a check that can never fail would
be caught.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
# scripts/ is not a package: import the chaos script's module by name (its checks are tested below).
chaos: Any = importlib.import_module("chaos")
chaos_relay: Any = importlib.import_module("chaos_relay")

TIMEOUT_S = 600


def run_small(script: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], Any]:
    report = tmp_path / f"{script}.json"
    argv = [
        sys.executable,
        str(REPO / "scripts" / f"{script}.py"),
        "--small",
        "--json",
        str(report),
    ]
    admin = os.environ.get("TEST_DATABASE_ADMIN_URL")
    if admin and script == "benchmark":
        argv += ["--admin-url", admin]
    done = subprocess.run(
        argv, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    assert report.exists(), f"no report\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done, json.loads(report.read_text())


@pytest.fixture(scope="module")
def benchmark_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Any]:
    done, report = run_small("benchmark", tmp_path_factory.mktemp("benchmark"))
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout, report


@pytest.fixture(scope="module")
def chaos_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Any]:
    done, report = run_small("chaos", tmp_path_factory.mktemp("chaos"))
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout, report


# --- the benchmark --------------------------------------------------------------------------------
def test_benchmark_small_runs_every_phase_correctly(benchmark_run: tuple[str, Any]) -> None:
    _, report = benchmark_run
    phases = report["phases"]
    assert report["broken"] == []
    assert phases["lifecycle_history"]["activities"] >= 5
    for name in ("throughput", "baseline"):
        assert phases[name]["errors"] == 0
        assert phases[name]["completed_in_window"] > 0
        assert phases[name]["cpu_ms_per_workflow"]["processes"] > 0  # the cost per lifecycle
    assert "postgres" in phases["throughput"]["cpu_ms_per_workflow"]  # every process counted
    assert phases["baseline"]["activities"] == phases["lifecycle_history"]["activities"]
    burst = phases["burst"]
    assert burst["reached_running"] == burst["terminated"] == burst["nodes"]
    assert burst["live_clusters_after"] == 0
    assert burst["worker_peak_rss_vmhwm_mib"] > 0
    parked = phases["parked"]
    assert parked["parked_running"] == parked["nodes"]
    assert parked["after_hold"]["database_mib"] > 0
    assert parked["after_hold"]["dev_server_rss_mib"] > 0


def test_benchmark_small_measures_calls_and_ready_detection_per_launch_delay(
    benchmark_run: tuple[str, Any],
) -> None:
    _, report = benchmark_run
    runs = report["phases"]["calls"]["by_launch_delay"]
    assert len(runs) >= 2
    assert len({run["launch_delay_s"] for run in runs}) == len(runs)
    for run in runs:
        assert run["errors"] == 0
        assert run["per_endpoint"]["POST /launch"] == 1.0  # one launch request per node
        assert run["skypilot_calls_per_lifecycle"] == sum(run["per_endpoint"].values())
        assert run["ready_detection"]["n"] == run["lifecycles"]
        assert run["ready_detection"]["p50_ms"] > 0  # ready_at comes after /health turned 200


def test_benchmark_small_evaluates_and_prints_every_target(benchmark_run: tuple[str, Any]) -> None:
    stdout, report = benchmark_run
    delays = len(report["phases"]["calls"]["by_launch_delay"])
    targets = report["targets"]
    # throughput, p50 and CPU per lifecycle; calls and ready detection per delay; fleet health
    # and admission
    assert len(targets) == 3 + 2 * delays + 5
    for target in targets:
        assert isinstance(target["passed"], bool)
        assert math.isfinite(target["value"])
        verdict = "PASS" if target["passed"] else "MISS"
        assert any(target["name"] in line and verdict in line for line in stdout.splitlines())


def test_benchmark_small_health_load_is_one_cluster_list_per_sweep(
    benchmark_run: tuple[str, Any],
) -> None:
    _, report = benchmark_run
    health = report["phases"]["health"]
    sizes = [run["running_nodes"] for run in health["by_size"]]
    assert sizes == sorted(sizes)
    assert len(set(sizes)) == len(sizes) >= 2
    for run in health["by_size"]:
        # Only the sweep's cluster list and its result: no per-node SkyPilot call.
        assert set(run["per_endpoint_per_min"]) <= {"POST /status", "GET /api/get"}
        assert run["sweep_runs"] > 0
        assert run["model_probes_per_min"] > 0  # every model was probed
        assert run["temporal_events_per_node_hour"] > 0
        assert run["sweep_events_per_hour"] > 0  # the fleet's fixed cost, shown apart
    assert "EXTRAPOLATED" in health["extrapolated"]["label"]
    assert health["extrapolated"]["running_nodes"] == 20_000


def test_benchmark_small_detects_every_broken_model_and_lost_cluster(
    benchmark_run: tuple[str, Any],
) -> None:
    _, report = benchmark_run
    live = report["phases"]["liveness"]
    assert live["nodes"] > 0
    assert live["unhealthy_detected"] == live["recovered"] == live["lost_detected"] == live["nodes"]
    assert live["crash_to_unhealthy"]["n"] == live["nodes"]


def test_benchmark_small_admission_burst_drains_within_the_budget(
    benchmark_run: tuple[str, Any],
) -> None:
    _, report = benchmark_run
    admission = report["phases"]["admission"]
    assert admission["reached_running"] == admission["terminated"] == admission["nodes"]
    assert 0 < admission["peak_in_flight"] <= admission["budget"]
    assert admission["nodes"] > admission["budget"]  # the budget was really in the way
    assert admission["status_latency"]["n"] > 0


# --- the chaos run --------------------------------------------------------------------------------
def test_chaos_small_holds_every_invariant(chaos_run: tuple[str, Any]) -> None:
    stdout, report = chaos_run
    assert report["ok"] is True
    assert len(report["checks"]) == 13
    assert report["checks"][-1]["name"] == chaos_relay.CHECK_NAME
    assert report["checks"][-1]["of"] > 0  # the relay's check saw the run's events
    assert all(check["ok"] and check["bad"] == 0 for check in report["checks"])
    assert "ALL INVARIANTS HOLD" in stdout
    assert sum(report["stats"]["statuses"].values()) == report["plan"]["lifecycles"]


def test_chaos_small_really_injected_its_faults(chaos_run: tuple[str, Any]) -> None:
    _, report = chaos_run
    stats, plan = report["stats"], report["plan"]
    assert stats["faults_fired"] == {
        "kill": plan["kills"],
        "pg_restart": plan["pg_restarts"],
        "pg_outage": plan["outages"],
        "terminate": plan["terminates"],
        "burst_503": plan["bursts"],
    }
    assert stats["worker_incarnations"] == plan["kills"] + 1
    # Kills spread over every worker process, each killed at least once.
    assert plan["kills"] >= plan["workers"] == len(stats["kills_per_worker"]) == 3
    assert sum(stats["kills_per_worker"].values()) == plan["kills"]
    # The outage outlasts a database step's 30 s start-to-close (workflows/options.py DATABASE).
    assert stats["postgres_outages_s"] == [plan["outage_s"]]
    assert plan["outage_s"] > 30
    assert stats["database_steps"]["highest_attempt"] >= 2  # the outage failed DB steps: retried
    assert stats["late_commits"] >= 1
    assert stats["operator_terminates"] == stats["terminates_recovered"] == plan["terminates"]
    assert stats["cli_nodes"] == plan["lifecycles"] // plan["cli_every"] >= 1
    assert stats["clusters_ever"] >= plan["lifecycles"] - stats["statuses"].get("failed", 0)
    assert stats["dropped_responses"] >= 1
    assert stats["unavailable_503"] >= 1
    assert stats["failed_requests_all_kinds"] >= 1  # fail_first: a transient, a permanent
    assert stats["relaunches"] >= 1
    assert stats["statuses"].get("failed", 0) >= 1


# --- the invariant checks catch what they are meant to -------------------------------------------
def event(node: str, kind: str, before: str, after: str, attempt: str | None = None) -> Any:
    key = f"{node}:{kind}" + (f":{attempt}" if attempt is not None else "")
    return {
        "node_id": node,
        "event_type": kind,
        "from_status": before,
        "to_status": after,
        "dedupe_key": key,
    }


GOOD_PATH = [
    event("n", "node.launched", "pending", "launching", "0"),
    event("n", "node.launched", "launching", "launching", "1"),
    event("n", "node.ready", "launching", "running"),
    event("n", "node.terminating", "running", "terminating"),
    event("n", "node.terminated", "terminating", "terminated"),
]


def test_path_check_accepts_a_lifecycle_with_a_relaunch() -> None:
    assert chaos.path_problem(GOOD_PATH, "terminated") is None
    failed = [GOOD_PATH[0], event("n", "node.failed", "launching", "failed")]
    assert chaos.path_problem(failed, "failed") is None


@pytest.mark.parametrize(
    ("events", "row_status", "problem"),
    [
        (GOOD_PATH[2:], "terminated", "while the node was pending"),
        (
            [GOOD_PATH[0], event("n", "node.launched", "launching", "launching", "0")],
            "launching",
            "attempt 0 where 1 was next",
        ),
        (GOOD_PATH[:3], "terminated", "events end at running"),
        ([GOOD_PATH[0], event("n", "node.ready", "launching", "failed")], "failed", "not a"),
    ],
    ids=["skips-launch", "same-attempt-twice", "row-disagrees", "bad-transition"],
)
def test_path_check_names_what_is_wrong(events: list[Any], row_status: str, problem: str) -> None:
    found = chaos.path_problem(events, row_status)
    assert found is not None
    assert problem in found


def test_duplicate_check_counts_the_same_event_twice() -> None:
    assert chaos.check_duplicates(GOOD_PATH).ok
    doubled = chaos.check_duplicates([*GOOD_PATH, GOOD_PATH[1]])
    assert doubled.bad == 1
    assert "attempt 1: 2x" in doubled.examples[0]


def test_launch_check_flags_a_duplicate_launch_request() -> None:
    spec = chaos.node_spec("t", 0, tenant="chaos")
    events = {spec.node_id: [event(spec.node_id, "node.launched", "pending", "launching", "0")]}
    assert chaos.check_launches([spec], events, {spec.cluster_name: 1}).ok
    assert chaos.check_launches([spec], events, {spec.cluster_name: 2}).bad == 1
    failed = {"status": "FAILED", "created_at": 1.0, "finished_at": 2.0}
    live = {"status": "RUNNING", "created_at": 1.0, "finished_at": None}
    again = {"status": "SUCCEEDED", "created_at": 3.0, "finished_at": 4.0}
    early = {"status": "SUCCEEDED", "created_at": 1.5, "finished_at": 4.0}
    two = {spec.cluster_name: 2}
    # A CLI launch that failed inside `sky launch` (no event), then one that worked: fine.
    assert chaos.check_launches([spec], events, two, {spec.cluster_name: [failed, again]}).ok
    # A second launch while the first was live, or before the failed one had finished: not.
    assert chaos.check_launches([spec], events, two, {spec.cluster_name: [live, again]}).bad == 1
    assert chaos.check_launches([spec], events, two, {spec.cluster_name: [failed, early]}).bad == 1
    # A launch that SUCCEEDED and whose cluster compensation downed before the adopting run's
    # relaunch: fine; one whose cluster was still there when the second was sent: not.
    downed = {"status": "SUCCEEDED", "created_at": 1.0, "finished_at": 1.5, "cluster_gone_at": 2.5}
    still_up = {**downed, "cluster_gone_at": 3.5}
    assert chaos.check_launches([spec], events, two, {spec.cluster_name: [downed, again]}).ok
    assert (
        chaos.check_launches([spec], events, two, {spec.cluster_name: [still_up, again]}).bad == 1
    )
    never_gone = {**downed, "cluster_gone_at": None}
    assert (
        chaos.check_launches([spec], events, two, {spec.cluster_name: [never_gone, again]}).bad == 1
    )


def test_live_cluster_checks_flag_orphans_and_leaks() -> None:
    rows = [
        {"cluster_name": "a", "status": "terminated"},
        {"cluster_name": "b", "status": "running"},
    ]
    assert chaos.check_live(["x", "b"], rows, final=False).examples == ["x"]
    assert chaos.check_live(["a", "b"], rows, final=True).bad == 1
    assert chaos.check_rows_final(rows).bad == 1


def test_relay_check_catches_a_missing_and_a_duplicated_event() -> None:
    assert chaos_relay.stream_problems([1, 2, 3], [3, 1, 2]) == []
    assert chaos_relay.stream_problems([1, 2, 3], [1, 3, 3]) == [
        "event 2: not in the stream",
        "event 3: stored 2 times",
    ]


def test_history_check_flags_a_cluster_that_outlived_its_row() -> None:
    rows = [
        {"cluster_name": "a", "status": "terminated"},
        {"cluster_name": "b", "status": "running"},
        {"cluster_name": "c", "status": "launching"},
    ]
    history = [
        {"name": "a", "cluster_hash": "1" * 8, "live": False},
        {"name": "a", "cluster_hash": "2" * 8, "live": True},  # launched again, never downed
        {"name": "b", "cluster_hash": "3" * 8, "live": True},
        {"name": "c", "cluster_hash": "4" * 8, "live": True},  # live, but not running
        {"name": "x", "cluster_hash": "5" * 8, "live": True},  # no row at all
    ]
    found = chaos.check_history(history, rows)
    assert (found.bad, found.of) == (3, 5)
    assert [e.split(" ")[0] for e in found.examples] == ["a", "c", "x"]
    assert chaos.check_history(history[:1] + history[2:3], rows).ok


def test_recovery_check_needs_a_new_run_that_ended_the_row() -> None:
    terminated = {n: (f"node-{n}", "run-1", "running") for n in ("n1", "n2", "n3")}
    by_id = {
        "n1": {"status": "terminated"},
        "n2": {"status": "running"},
        "n3": {"status": "terminated"},
    }
    latest = {"n1": ("run-2", "COMPLETED"), "n2": ("run-2", "RUNNING"), "n3": ("run-1", "X")}
    found = chaos.check_recovered(terminated, latest, by_id)
    assert (found.bad, found.of) == (2, 3)
    assert "node-n2: the new run is RUNNING" in found.examples[0]
    assert "node-n3: no run after the terminated one" in found.examples[1]


def test_cli_check_flags_a_planned_cli_node_that_ran_over_the_api() -> None:
    planned = [chaos.node_spec("t", i, tenant="chaos") for i in (2, 5)]
    by_id = {spec.node_id: {"launch_mode": "cli"} for spec in planned}
    found = chaos.check_cli(planned, by_id)
    assert (found.bad, found.of) == (0, 2)
    by_id[planned[1].node_id] = {"launch_mode": "api"}
    assert chaos.check_cli(planned, by_id).bad == 1
    assert [chaos.cli_mode(3, i) for i in range(6)] == [False, False, True] * 2
    assert not any(chaos.cli_mode(0, i) for i in range(6))


def test_every_kill_goes_to_the_next_worker_and_terminates_come_early() -> None:
    plan = chaos.Plan(kills=6, terminates=4, outages=1)
    marks = chaos.schedule(plan)
    assert [f for _, f in marks].count("kill") == 6
    assert max(at for at, f in marks if f == "terminate") <= 0.6
    assert [f for _, f in marks].count("pg_outage") == 1
