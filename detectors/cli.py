"""`warden detect ...`: train the baseline, score new decisions, evaluate the detectors on traffic."""

from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup

from audit.db import READ_ONLY
from authz.cli import cli_actor
from detectors.evaluate import TrafficError, evaluate, read_traffic, write
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
    forest = "rules and isolation forest" if result.forest else "rules only (no baseline: warden detect train)"
    click.echo(f"scored {result.scored} decision(s) through seq {result.through_seq} with {forest}; "
               f"opened {len(result.opened)} review item(s)")


@detect_cli.command("evaluate")
@click.option("--traffic", "traffic_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="JSON lines: an /v1/authorize body plus time, and optional rows and label.")
@click.option("--out", type=click.Path(file_okay=False), default="detect-evaluation", show_default=True,
              help="Directory for items.jsonl and summary.json.")
@click.option("--contamination", type=click.FloatRange(0.0001, 0.5), default=0.01, show_default=True)
def detect_evaluate(traffic_file: str, out: str, contamination: float) -> None:
    """Run the detectors over recorded traffic, decided with the current policy; write what they open."""
    warden = _warden()
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
