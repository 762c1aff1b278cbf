"""`warden evidence`: what an auditor asks for a period, from the ledger and the review queue.

The report says whether the whole chain verifies (and against which signed
checkpoints), then what happened in the period: decisions by outcome, domain
and action, every administrative change (policy, tokens, accounts and second
factors, keys, retention purges, detector runs), privacy requests and their
deadlines, and review items. People appear only as pseudonyms; every line
names the ledger records (seq) it comes from, so it can be checked against an
export. Written as evidence.json and a self-contained report.html.
"""

import html
import json
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import Engine, select

from audit.chain import format_time, utcnow
from audit.db import READ_ONLY
from audit.models import LedgerRecord, PrivacyRequest
from audit.signing import LedgerSigner
from audit.verify import verify_ledger
from detectors.models import ReviewItem

_records = LedgerRecord.__table__
_requests = PrivacyRequest.__table__
_items = ReviewItem.__table__
ADMIN_KINDS = ("policy.change", "token.create", "token.rotate", "account.create", "account.password",
               "mfa.enroll", "mfa.reset", "mfa.lock", "keys.rotate", "keys.retire", "ledger.purge",
               "privacy.reveal", "detector.train", "detector.accept", "detector.run", "review.update")


def gather(engine: Engine, signer: LedgerSigner, start: datetime, end: datetime) -> dict:
    """Everything the report shows, as plain data, for records created in [start, end)."""
    report = verify_ledger(engine, signer)
    decisions = {"total": 0, "allowed": 0, "denied": 0, "by_domain": Counter(), "by_action": Counter(),
                 "denied_objects": Counter(), "first_seq": None, "last_seq": None}
    changes, counts = [], Counter()
    with engine.connect().execution_options(**READ_ONLY) as conn:
        rows = conn.execute(select(_records.c.seq, _records.c.kind, _records.c.body)
                            .where(_records.c.created_at >= start, _records.c.created_at < end)
                            .order_by(_records.c.seq))
        for seq, kind, body in rows:
            counts[kind] += 1
            record = json.loads(body)
            data = record["data"]
            if kind == "decision":
                decisions["total"] += 1
                decisions["allowed" if data["allowed"] else "denied"] += 1
                decisions["by_domain"][data["domain"]] += 1
                decisions["by_action"][data["action"]] += 1
                if not data["allowed"]:
                    decisions["denied_objects"][data["object"]] += 1
                decisions["first_seq"] = decisions["first_seq"] or seq
                decisions["last_seq"] = seq
            elif kind in ADMIN_KINDS or kind.startswith(("privacy.", "mfa.", "account.", "keys.")):
                changes.append({"seq": seq, "time": record["time"], "kind": kind, "summary": _summary(kind, data)})
        privacy = [{"id": r.id, "kind": r.kind, "status": r.status, "subject": r.pseudonym,
                    "received_at": format_time(r.received_at), "due_at": format_time(r.due_at),
                    "completed_at": format_time(r.completed_at) if r.completed_at else None,
                    "overdue": r.completed_at is None and _aware(r.due_at) < utcnow()}
                   for r in conn.execute(select(_requests).where(_requests.c.received_at >= start,
                                                                 _requests.c.received_at < end)
                                         .order_by(_requests.c.received_at))]
        items = conn.execute(select(_items).where(_items.c.opened_at >= start, _items.c.opened_at < end)
                             .order_by(_items.c.opened_at)).all()
    review = {"opened": len(items), "by_detector": Counter(i.detector for i in items),
              "by_status": Counter(i.status for i in items),
              "open_high": [{"id": i.id, "detector": i.detector, "subject": i.subject, "seqs": json.loads(i.seqs),
                             "reasons": json.loads(i.reasons), "opened_at": format_time(i.opened_at)}
                            for i in items if i.status == "open" and i.priority == "high"]}
    for key in ("by_domain", "by_action"):
        decisions[key] = dict(decisions[key].most_common())
    decisions["denied_objects"] = dict(decisions["denied_objects"].most_common(10))
    review["by_detector"], review["by_status"] = dict(review["by_detector"]), dict(review["by_status"])
    return {"generated_at": format_time(utcnow()), "period": {"from": format_time(start), "to": format_time(end)},
            "ledger": report.as_dict(), "records_in_period": dict(sorted(counts.items())),
            "decisions": decisions, "changes": changes, "privacy_requests": privacy, "review": review}


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _summary(kind: str, data: dict) -> str:
    """One line about an administrative record, without personal data (the records hold pseudonyms)."""
    if kind == "policy.change":
        return (f"policy v{data['version']} by {data['actor']}: {len(data['added'])} row(s) added, "
                f"{len(data['removed'])} removed" + (" (replace)" if data.get("replace") else ""))
    if kind == "review.update":
        return f"review item {data['item']}: {data['previous_status']} -> {data['status']} by {data['actor']}"
    shown = {k: v for k, v in data.items() if k in ("actor", "name", "role", "version", "scopes", "through_seq",
                                                     "purged", "events", "kind", "status", "request_id", "seq",
                                                     "subject", "rewrapped", "reason")}
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or "-"


def write(evidence: dict, out: Path) -> None:
    """evidence.json and report.html in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "evidence.json").write_text(json.dumps(evidence, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "report.html").write_text(render(evidence), encoding="utf-8")


def render(e: dict) -> str:
    """The report as one HTML page with no outside assets."""
    esc = html.escape
    ledger, decisions, review = e["ledger"], e["decisions"], e["review"]
    if ledger["ok"]:
        verdict = (f"<p class='ok'>INTACT: every record from seq {ledger['start_seq']} to the head (seq "
                   f"{ledger['head_seq']}) verifies, against {ledger['checkpoints_checked']} signed checkpoint(s).</p>")
    else:
        failure = ledger["first_failure"]
        verdict = (f"<p class='bad'>FAILED at seq {failure['seq']} ({esc(failure['kind'])}): "
                   f"{esc(failure['message'])}</p>")

    def table(head, rows):
        body = "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in rows)
        return (f"<table><thead><tr>{''.join(f'<th>{esc(h)}</th>' for h in head)}</tr></thead>"
                f"<tbody>{body or f'<tr><td colspan={len(head)}>None</td></tr>'}</tbody></table>")

    grouped = defaultdict(list)
    for change in e["changes"]:
        grouped[change["kind"].split(".")[0]].append(change)
    changes = "".join(f"<h3>{esc(group)}</h3>" + table(["seq", "time", "kind", "what"], [
        (c["seq"], c["time"], c["kind"], c["summary"]) for c in items]) for group, items in sorted(grouped.items()))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Warden evidence {esc(e['period']['from'][:10])} to {esc(e['period']['to'][:10])}</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; margin: 2rem auto; max-width: 980px; color: #1c2430; padding: 0 1rem; }}
h1 {{ margin-bottom: .2rem; }} h2 {{ margin-top: 2rem; border-bottom: 1px solid #dde3ea; }}
table {{ border-collapse: collapse; width: 100%; font-size: .9rem; margin: .5rem 0 1rem; }}
th, td {{ text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #eef1f5; vertical-align: top; }}
.ok {{ background: #e6f4ea; color: #1e7a3c; padding: .6rem .9rem; border-radius: 6px; }}
.bad {{ background: #fdecea; color: #b3261e; padding: .6rem .9rem; border-radius: 6px; }}
.muted {{ color: #5b6676; }} .figures {{ display: flex; gap: 2rem; }} .figures div {{ font-size: 1.6rem; }}
</style></head><body>
<h1>Warden evidence</h1>
<p class="muted">Period {esc(e['period']['from'])} to {esc(e['period']['to'])} (end excluded) · generated {esc(e['generated_at'])} ·
people appear as pseudonyms · "seq" names the ledger record</p>
<h2>Integrity of the audit ledger</h2>
{verdict}
<p class="muted">Records checked: {ledger['checked']} · sealed (purged) through seq {ledger['sealed_through']} ·
head hash <code>{esc(ledger['head_hash'])}</code></p>
<h2>Decisions</h2>
<div class="figures"><div><span class="muted">total</span><br>{decisions['total']}</div>
<div><span class="muted">allowed</span><br>{decisions['allowed']}</div>
<div><span class="muted">denied</span><br>{decisions['denied']}</div></div>
<p class="muted">Records seq {decisions['first_seq'] or '-'} to {decisions['last_seq'] or '-'}.</p>
{table(['domain', 'decisions'], decisions['by_domain'].items())}
{table(['action', 'decisions'], decisions['by_action'].items())}
<h3>Most denied objects</h3>
{table(['object', 'denials'], decisions['denied_objects'].items())}
<h2>Administrative changes</h2>
{changes or '<p>None in this period.</p>'}
<h2>Privacy requests</h2>
{table(['received', 'kind', 'status', 'due', 'completed', 'overdue'], [
    (r['received_at'], r['kind'], r['status'], r['due_at'], r['completed_at'] or '-', 'yes' if r['overdue'] else 'no')
    for r in e['privacy_requests']])}
<h2>Review queue</h2>
<p>{review['opened']} item(s) opened in the period.</p>
{table(['detector', 'items'], review['by_detector'].items())}
{table(['status', 'items'], review['by_status'].items())}
<h3>High priority, still open</h3>
{table(['opened', 'detector', 'person', 'records', 'why'], [
    (i['opened_at'], i['detector'], i['subject'], ', '.join(map(str, i['seqs'])), '; '.join(i['reasons']))
    for i in review['open_high']])}
<h2>Records in the period, by kind</h2>
{table(['kind', 'records'], e['records_in_period'].items())}
</body></html>
"""
