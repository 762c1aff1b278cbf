"""`warden audit ...`: commands on the ledger."""

import getpass
import json
import os
import sys
from datetime import timezone
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup

from audit.checkpoints import export_checkpoint, read_checkpoint_files
from audit.ledger import Entry
from audit.logfiles import purge_logs
from audit.retention import PurgeRefused, purge_ledger
from audit.search import export_records
from audit.signing import KeyDirError
from audit.verify import verify_ledger

audit_cli = AppGroup("audit", help="The tamper-evident audit ledger.")


def _warden():
    return current_app.extensions["warden"]


def render_report(report) -> str:
    """Return a verification report as the lines a person reads."""
    lines = [f"Ledger verification: {'INTACT' if report.ok else 'FAILED'}",
             f"  records checked:      {report.checked} (seq {report.start_seq}..{report.last_seq})",
             f"  chain head:           seq {report.head_seq}, hash {report.head_hash[:16]}...",
             f"  checkpoints matched:  {report.checkpoints_checked}"]
    if report.sealed_through:
        lines.append(f"  purged and sealed:    records 1..{report.sealed_through}")
    if report.from_checkpoint is not None:
        lines.append(f"  started after:        checkpoint at seq {report.from_checkpoint}")
    if report.first_failure:
        failure = report.first_failure
        lines.append(f"  first failure:        seq {failure.seq} ({failure.kind}): {failure.message}")
    return "\n".join(lines)


@audit_cli.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--from-checkpoint", is_flag=True, help="Check only what follows the newest signed checkpoint.")
@click.option("--checkpoints", "external", type=click.Path(exists=True, path_type=Path),
              help="Also hold the chain to checkpoints exported to this file or directory.")
@click.option("--processes", type=click.IntRange(min=1), default=None,
              help="On Postgres, share a long chain among up to this many processes, each taking "
                   "100,000 records or more (default: one per usable CPU).")
def verify_command(as_json: bool, from_checkpoint: bool, external: Path | None, processes: int | None) -> None:
    """Walk the hash chain; exit 0 when intact, 1 naming the first broken record."""
    warden = _warden()
    try:
        outside = read_checkpoint_files(external) if external else []
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    total = warden.ledger.head()[0]
    show_bar = sys.stderr.isatty() and not as_json
    with click.progressbar(length=total, label="verifying", file=sys.stderr, hidden=not show_bar) as bar:
        done = [0]

        def progress(checked: int) -> None:
            bar.update(checked - done[0])
            done[0] = checked
        report = verify_ledger(warden.engine, warden.signer, external=outside,
                               from_checkpoint=from_checkpoint, progress=progress,
                               processes=processes or _usable_cpus())
    click.echo(json.dumps(report.as_dict(), indent=2) if as_json else render_report(report))
    sys.exit(0 if report.ok else 1)


def _usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@audit_cli.command("checkpoint")
@click.option("--out", type=click.Path(path_type=Path),
              help="Also write the checkpoint to this file, or into this directory, outside the database.")
def checkpoint_command(out: Path | None) -> None:
    """Sign the chain head (seq, hash) with the ledger key and store it."""
    try:
        checkpoint = _warden().checkpoints.create()
    except KeyDirError as exc:
        raise click.ClickException(str(exc)) from None
    if checkpoint is None:
        raise click.ClickException("the ledger is empty: nothing to checkpoint")
    click.echo(f"checkpoint at seq {checkpoint.seq}, hash {checkpoint.hash}, key {checkpoint.key_id}")
    if out:
        click.echo(f"written to {export_checkpoint(checkpoint, out)}")


@audit_cli.command("purge")
@click.option("--older-than", "days", type=click.IntRange(min=1),
              help="Remove records older than this many days [default: WARDEN_RETENTION_DAYS].")
def purge_command(days: int | None) -> None:
    """Remove records past retention, leaving a signed seal that verification starts from."""
    warden = _warden()
    days = days or current_app.config["RETENTION_DAYS"]
    try:
        purged = purge_ledger(warden.engine, warden.ledger, warden.signer, days, actor=f"cli:{getpass.getuser()}")
    except (KeyDirError, PurgeRefused) as exc:
        raise click.ClickException(str(exc)) from None
    if purged is None:
        click.echo(f"nothing older than {days} days")
        return
    click.echo(f"purged {purged.count} record(s) through seq {purged.through_seq}; sealed with hash "
               f"{purged.hash[:16]}...; the purge is record {purged.audit_seq}")


@audit_cli.command("export")
@click.option("--since", type=click.DateTime(), help="First time to include (UTC), e.g. 2026-11-01.")
@click.option("--until", type=click.DateTime(), help="Last time to include (UTC).")
@click.option("--format", "fmt", type=click.Choice(["jsonl"]), default="jsonl", show_default=True)
@click.option("--out", type=click.File("w", encoding="utf-8"), default="-",
              help="Write here instead of standard output.")
def export_command(since, until, fmt, out) -> None:
    """Stream records as JSON lines with their exact hashed bodies, for outside re-verification.

    Each line: seq, prev_hash, hash, kind, body; SHA-256(bytes.fromhex(prev_hash) + body) == hash.
    """
    since = since.replace(tzinfo=timezone.utc) if since else None
    until = until.replace(tzinfo=timezone.utc) if until else None
    if since and until and until < since:
        raise click.BadParameter("--until is before --since")
    for line in export_records(_warden().engine, since, until):
        out.write(line + "\n")


keys_cli = AppGroup("keys", help="Master keys for people's data keys (kept in WARDEN_KEY_DIR).")


@keys_cli.command("status")
def keys_status() -> None:
    """List master key versions, which is current, and how many people's keys each wraps."""
    warden = _warden()
    with warden.engine.connect() as conn:
        try:
            warden.vault.check(conn)
            used = warden.vault.versions_in_use(conn)
            versions = warden.vault.keyring.versions
        except KeyDirError as exc:
            raise click.ClickException(str(exc)) from None
    for version in versions:
        current = " (current)" if version == versions[-1] else ""
        click.echo(f"master v{version}{current}: wraps {used.get(version, 0)} data key(s)")


@keys_cli.command("rotate")
def keys_rotate() -> None:
    """Create a new master version and rewrap every data key with it (no personal data is decrypted)."""
    warden = _warden()
    try:
        with warden.engine.begin() as conn:
            version, count = warden.vault.rotate(conn)
            warden.ledger.append(conn, [Entry("keys.rotate", {"version": version, "rewrapped": count,
                                                              "actor": f"cli:{getpass.getuser()}"})])
    except KeyDirError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"master v{version} is current; rewrapped {count} data key(s). "
               "Older versions can be retired: warden keys retire VERSION")


@keys_cli.command("retire")
@click.argument("version", type=int)
def keys_retire(version: int) -> None:
    """Delete an old master version once no data key is wrapped with it."""
    warden = _warden()
    with warden.engine.begin() as conn:
        used = warden.vault.versions_in_use(conn).get(version, 0)
        if used:
            raise click.ClickException(f"master v{version} still wraps {used} data key(s): run warden keys rotate")
        try:
            warden.vault.keyring.retire(version)
        except KeyDirError as exc:
            raise click.ClickException(str(exc)) from None
        warden.ledger.append(conn, [Entry("keys.retire", {"version": version, "actor": f"cli:{getpass.getuser()}"})])
    click.echo(f"master v{version} retired (its file is deleted)")


logs_cli = AppGroup("logs", help="Temporary application and access logs (WARDEN_LOG_DIR).")


@logs_cli.command("purge")
@click.option("--older-than", "days", type=click.IntRange(min=1),
              help="Delete daily log files older than this many days [default: WARDEN_RETENTION_DAYS].")
def logs_purge(days: int | None) -> None:
    """Delete log files past the retention period (apart from the ledger's sealed purge)."""
    days = days or current_app.config["RETENTION_DAYS"]
    removed = purge_logs(current_app.config["LOG_DIR"], days)
    click.echo(f"deleted {len(removed)} log file(s) older than {days} days" +
               (f": {', '.join(removed)}" if removed else ""))
