"""Rule detectors: access that needs no history to look wrong.

- break_glass: an emergency workflow was used; always reviewed.
- out_of_workflow: access was allowed without a declared workflow (a rule whose
  workflow is `*` let it through), so nobody said why it was needed.
- denial_burst: one person was denied many times in a short while (probing).
"""

from collections import defaultdict, deque
from collections.abc import Iterable
from datetime import timedelta

from detectors.features import DecisionEvent
from detectors.findings import Finding

BREAK_GLASS_WORKFLOWS = frozenset({"break-glass", "break_glass", "breakglass", "emergency"})
BURST_DENIALS = 5
BURST_WINDOW = timedelta(minutes=10)


def immediate_finding(event: DecisionEvent) -> Finding | None:
    """What the rules that need no history say of one decision (break-glass, out of workflow), if anything."""
    if event.workflow.lower() in BREAK_GLASS_WORKFLOWS:
        return Finding("break_glass", (event.seq,), event.subject, 1.0, "high", (
            f"break-glass workflow {event.workflow!r} used to {event.action} {event.object} in {event.domain}"
            + ("" if event.allowed else " (denied)"),))
    if event.allowed and not event.workflow:
        return Finding("out_of_workflow", (event.seq,), event.subject, 0.6, "medium", (
            f"{event.action} on {event.object} in {event.domain} was allowed with no declared workflow",))
    return None


def rule_findings(events: Iterable[DecisionEvent]) -> list[Finding]:
    """Findings of every rule over `events` (in ledger order), one per event or burst."""
    findings = []
    denials: dict[str, deque] = defaultdict(deque)
    for event in events:
        if finding := immediate_finding(event):
            findings.append(finding)
        if not event.allowed:
            window = denials[event.subject]
            while window and event.time - window[0].time > BURST_WINDOW:
                window.popleft()
            window.append(event)
            if len(window) == BURST_DENIALS:  # one finding per burst, when it reaches the threshold
                objects = sorted({e.object for e in window})
                findings.append(Finding("denial_burst", tuple(e.seq for e in window), event.subject, 0.8, "high", (
                    f"{BURST_DENIALS} denials within {int(BURST_WINDOW.total_seconds() // 60)} minutes",
                    "objects tried: " + ", ".join(objects[:5]) + (" ..." if len(objects) > 5 else ""))))
                window.clear()
    return findings
