"""`warden audit ...`: commands on the ledger."""

import json
import sys

import click
from flask import current_app
from flask.cli import AppGroup

from audit.verify import verify_ledger

audit_cli = AppGroup("audit", help="The tamper-evident audit ledger.")


def render_report(report) -> str:
    """Return a verification report as the lines a person reads."""
    status = "INTACT" if report.ok else "FAILED"
    lines = [f"Ledger verification: {status}",
             f"  records checked: {report.checked}",
             f"  chain head:      seq {report.head_seq}, hash {report.head_hash[:16]}..."]
    if report.first_failure:
        failure = report.first_failure
        lines.append(f"  first failure:   seq {failure.seq} ({failure.kind}): {failure.message}")
    return "\n".join(lines)


@audit_cli.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify_command(as_json: bool) -> None:
    """Walk the hash chain; exit 0 when intact, 1 naming the first broken record."""
    warden = current_app.extensions["warden"]
    total = warden.ledger.head()[0]
    show_bar = sys.stderr.isatty() and not as_json and total > 10000
    with click.progressbar(length=total, label="verifying", file=sys.stderr,
                           hidden=not show_bar) as bar:
        last = [0]

        def progress(done: int) -> None:
            bar.update(done - last[0])
            last[0] = done
        report = verify_ledger(warden.engine, progress=progress)
    click.echo(json.dumps(report.as_dict(), indent=2) if as_json else render_report(report))
    sys.exit(0 if report.ok else 1)
