"""A decision as a person reads it: signals, then each step with its reason."""

from __future__ import annotations

from pdscaler.domain.decision import DecisionRecord


def explain(record: DecisionRecord, decision_id: int | None = None) -> list[str]:
    """Lines of plain text: a headline, the signals, then the chain of steps."""
    current = "?" if record.current_replicas is None else str(record.current_replicas)
    desired = "?" if record.desired_replicas is None else str(record.desired_replicas)
    ref = f" #{decision_id}" if decision_id is not None else ""
    lines = [
        f"{record.role.value}: {current} -> {desired} ({record.action.value}, "
        f"{record.status.value}){ref} at {record.decided_at.isoformat()}, "
        f"policy version {record.policy_version}, mode {record.mode.value}"
    ]
    if record.error:
        lines.append(f"  error: {record.error}")
    shown = [
        f"{name}={_value(audit)}"
        for name, audit in sorted(record.signals.items())
        if isinstance(audit, dict)
    ]
    if shown:
        lines.append("  signals: " + ", ".join(shown))
    width = max((len(step.name) for step in record.steps), default=0)
    for step in record.steps:
        message = f"  {step.message}" if step.message else ""
        lines.append(f"  {step.name:<{width}} {step.value:>5}  {step.reason}{message}")
    return lines


def _value(audit: dict[str, object]) -> str:
    value, quality = audit.get("value"), audit.get("quality")
    if quality != "fresh" or not isinstance(value, int | float):
        return f"({quality})"
    return f"{value:g}"
