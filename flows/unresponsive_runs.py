"""A run whose process died (SIGKILL, OOM, power) shows Crashed on a long-running Prefect server.

Nothing of the dead process can report it, so the server has to notice: every flow run sends
a heartbeat event every HEARTBEAT_SECONDS (Prefect's flow heartbeats), and one automation on
the server marks a run of this project's flows Crashed when RCI_CRASHED_AFTER_SECONDS (90) pass
without one and without a final state (Prefect's own recipe for "zombie" runs). The next run of the
same code base does it at once when it takes over the dead run's lock (flows/index.py).
"""

from __future__ import annotations

import os
from datetime import timedelta

HEARTBEAT_SECONDS = 30  # Prefect's minimum; the wait before Crashed is RCI_CRASHED_AFTER_SECONDS
AUTOMATION_NAME = "rust-code-index: mark unresponsive runs Crashed"
FLOW_NAMES = ["index-codebase", "force-reindex", "nightly-reindex"]


def send_heartbeats() -> None:
    """Before Prefect is imported, for a process whose runs report to a long-running server."""
    os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", str(HEARTBEAT_SECONDS))


def crash_automation(after_seconds: int):
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return AutomationCore(
        name=AUTOMATION_NAME,
        description=f"A run of rust-code-index's flows that sent no heartbeat for {after_seconds} s died: mark it Crashed.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            match_related=ResourceSpecification({"prefect.resource.role": "flow", "prefect.resource.name": FLOW_NAMES}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=after_seconds),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {after_seconds} s: the process running it died",
                force=True,
            )
        ],
    )


def ensure_crash_automation(after_seconds: int) -> None:
    """Create the automation on the configured server, or bring it up to date. Quick when it is."""
    from prefect.client.orchestration import get_client

    wanted = crash_automation(after_seconds)
    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(AUTOMATION_NAME)
        if not existing:
            client.create_automation(wanted)
            return
        if existing[0].trigger.within != wanted.trigger.within or existing[0].trigger.match_related != wanted.trigger.match_related:
            client.update_automation(existing[0].id, wanted)
        for extra in existing[1:]:  # created by two runs starting at the same moment
            client.delete_automation(extra.id)


if __name__ == "__main__":  # `prefect deploy` runs this (deployments/prefect.yaml) on the configured server
    from tasks.settings import load_settings

    ensure_crash_automation(load_settings().crashed_after_seconds)
    print(f"automation '{AUTOMATION_NAME}' is on the server")
