"""`warden detect ...`: train the baseline, score new decisions, evaluate the detectors on traffic."""

from datetime import datetime, time, timedelta, timezone
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from audit.db import READ_ONLY
from authz.cli import cli_actor
from detectors.evaluate import TrafficError, evaluate, read_traffic, write
from detectors.sample_traffic import sample_traffic
from detectors.forest import NotEnoughHistory

detect_cli = AppGroup("detect", help="Anomaly detection: the isolation forest and the rule detectors.")


def _warden():
    return current_app.extensions["warden"]


@detect_cli.command("train")
@click.option("--contamination", type=click.FloatRange(0.0001, 0.5), default=0.01, show_default=True,
              help="About this share of the training decisions would have been flagged.")
def detect_train(contamination: float) -> None:
    """Learn what usual access looks like from every decision so far (opted-out people left out)."""
    try:
        baseline = _warden().scoring.train(actor=cli_actor(), contamination=contamination)
    except NotEnoughHistory as exc:
        raise click.ClickException(f"{exc}: record more decisions first (warden demo seeds some)") from None
    click.echo(f"baseline: {baseline.events} decisions (seq {baseline.from_seq}..{baseline.to_seq}), "
               f"threshold {baseline.threshold:.3f}; now run: warden detect run")


@detect_cli.command("run")
def detect_run() -> None:
    """Score the decisions since the last run and open review items for what looks wrong."""
    result = _warden().scoring.run(actor=cli_actor())
    if not result.scored:
        click.echo(f"nothing new to score (scored through seq {result.through_seq})")
        return
    forest = ("rules and isolation forest" if result.forest
              else "rules only (no usable baseline: warden detect train)")
    click.echo(f"scored {result.scored} decision(s) through seq {result.through_seq} with {forest}; "
               f"opened {len(result.opened)} review item(s)")


@detect_cli.command("evaluate")
@click.option("--traffic", "traffic_file", type=click.Path(exists=True, dir_okay=False),
              help="JSON lines: an /v1/authorize body plus time, and optional rows and label. "
                   "Without it: Warden's labelled sample for the demo policy, written to DIR/traffic.jsonl.")
@click.option("--out", type=click.Path(file_okay=False), default="detect-evaluation", show_default=True,
              help="Directory for items.jsonl and summary.json.")
@click.option("--contamination", type=click.FloatRange(0.0001, 0.5), default=0.01, show_default=True)
def detect_evaluate(traffic_file: str | None, out: str, contamination: float) -> None:
    """Run the detectors over recorded traffic, decided with the current policy; write what they open."""
    warden = _warden()
    if traffic_file is None:
        Path(out).mkdir(parents=True, exist_ok=True)
        traffic_file = str(Path(out) / "traffic.jsonl")
        sample = sample_traffic()
        Path(traffic_file).write_text("\n".join(sample) + "\n", encoding="utf-8")
        click.echo(f"no --traffic: evaluating Warden's sample ({len(sample)} labelled lines written for the demo "
                   f"policy) -> {traffic_file}")
    try:
        traffic = read_traffic(Path(traffic_file))
        with warden.engine.connect().execution_options(**READ_ONLY) as conn:
            decider = warden.policies.snapshot(conn).decider
        result = evaluate(traffic, decider, contamination=contamination)
    except TrafficError as exc:
        raise click.ClickException(f"{traffic_file}: {exc}") from None
    write(result, Path(out))
    click.echo(f"{result.lines} line(s), {len(result.items)} review item(s) -> {Path(out) / 'items.jsonl'}")
    if set(result.by_label) != {"normal"}:
        for label, counts in result.by_label.items():
            share = counts["covered"] / counts["lines"] if counts["lines"] else 0
            what = "flagged (false positives)" if label == "normal" else "caught"
            click.echo(f"  {label:24s} {counts['covered']:>6} of {counts['lines']:>6} lines {what} ({share:.0%})")


def _when(value: str, end: bool) -> datetime:
    """A date (the whole day; `end` means up to its end) or an ISO 8601 time, in UTC."""
    try:
        if len(value) == 10:
            day = datetime.combine(datetime.fromisoformat(value).date(), time(), tzinfo=timezone.utc)
            return day + timedelta(days=1) if end else day
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    except OverflowError:  # past 9999-12-31 or before 0001-01-01 once in UTC: the edge of time
        return (datetime.max if value.startswith("9999") else datetime.min).replace(tzinfo=timezone.utc)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (2026-11-29) or an ISO 8601 time") from None


@click.command("evidence")
@with_appcontext
@click.option("--from", "start", required=True, help="First day (YYYY-MM-DD) or time (ISO 8601, UTC).")
@click.option("--to", "end", required=True, help="Last day, included (YYYY-MM-DD), or a time (excluded).")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Directory for report.html and "
                                                                             "evidence.json.")
def evidence_command(start: str, end: str, out: str) -> None:
    """Write an auditor's report for a period: ledger integrity, decisions, changes, privacy, reviews."""
    from detectors.evidence import gather, write

    begin, finish = _when(start, end=False), _when(end, end=True)
    if finish <= begin:
        raise click.BadParameter("--to must be after --from", param_hint="--to")
    warden = _warden()
    evidence = gather(warden.engine, warden.signer, begin, finish)
    write(evidence, Path(out))
    verdict = "intact" if evidence["ledger"]["ok"] else "FAILED verification"
    click.echo(f"{evidence['decisions']['total']} decision(s), {len(evidence['changes'])} administrative change(s), "
               f"{evidence['review']['opened']} review item(s) in the period; ledger {verdict}. "
               f"Wrote {Path(out) / 'report.html'} and {Path(out) / 'evidence.json'}")
    if not evidence["ledger"]["ok"]:
        raise SystemExit(1)
