"""/v1/authorize throughput against bare endpoints, on the same gunicorn settings, in one run.

    dropdb -h 127.0.0.1 -U postgres --if-exists warden_bench && createdb -h 127.0.0.1 -U postgres warden_bench
    python bench/authorize.py --database-url postgresql+psycopg://postgres@127.0.0.1/warden_bench

Starts `warden serve` on that database and three bare endpoints (bench/bare_app.py:
parse the JSON, answer, write nothing) on the same gunicorn worker class as Warden's
(authz/worker.py), the same workers, threads and logging: "bare" answers in Flask,
as a service's plain endpoint would (the worker is then gthread with the garbage
collector's start-up freeze and the event-loop linger on close); "bare-wsgi" is the
same endpoint as a plain WSGI callable; "bare-inline" is parsed and handled on the
worker's inline path as Warden's authorize is, minus the token, decision and record,
and answered at once (authorize's answer waits for its commit). It loads each with wrk (Debian's `wrk`) for the same
time and connections, and prints the request rates and the ratios of authorize to
each, with what each request cost: CPU in the workers and in Postgres, and the
workers' context switches (read from /proc; where the time goes, since the servers
saturate the cores). They alternate for `--rounds` rounds (this machine is noisy)
and the median ratios are the result. A run in which one worker accepted every
connection is measured again, for any server. Every authorize answer is a committed
ledger record (synchronous_commit stays on); the ledger is verified at the end.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from app import ACCESS_LOG_FORMAT, log_config

HERE = Path(__file__).resolve().parent
BODY = {"subject": "alice", "domain": "prod", "object": "db/customers", "action": "read",
        "context": {"workflow": "maintenance", "ticket": "OPS-12"}}
POLICY = "p, role:engineer, prod, db/*, read, maintenance, allow\ng, alice, role:engineer, *\n"


def warden(*args, env, **kwargs):
    return subprocess.run([sys.executable, "-c", "import app; app.main()", *args], env=env, check=True,
                          capture_output=True, text=True, **kwargs)


def wait_until_up(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"server at {url} did not come up")


def run_wrk(url: str, token: str, seconds: int, connections: int, wrk_threads: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(json.dumps(BODY))}\n'
                     f'wrk.headers["Content-Type"] = "application/json"\n'
                     f'wrk.headers["Authorization"] = "Bearer {token}"\n')
    out = subprocess.run(["wrk", f"-t{wrk_threads}", f"-c{connections}", f"-d{seconds}s", "-s", script.name, url],
                         check=True, capture_output=True, text=True).stdout
    os.unlink(script.name)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rate": rate, "non_2xx": int(errors.group(1)) if errors else 0}


def usage(pids: list[int]) -> tuple[float, int]:
    """CPU seconds used so far by `pids`, and the context switches of all their threads (Linux /proc)."""
    ticks, cpu, switches = os.sysconf("SC_CLK_TCK"), 0.0, 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
            for task in Path(f"/proc/{pid}/task").iterdir():
                for line in (task / "status").read_text().splitlines():
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        switches += int(line.split()[1])
        except OSError:  # it ended meanwhile
            continue
    return cpu, switches


def _processes() -> list[tuple[int, int, bytes]]:
    """(pid, parent pid, command line) of every process."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                found.append((int(entry.name), parent, (entry / "cmdline").read_bytes()))
            except OSError:
                continue
    return found


def children(pid: int) -> list[int]:
    """The gunicorn workers of the server `pid`."""
    return [child for child, parent, _ in _processes() if parent == pid]


def postgres_pids() -> list[int]:
    """Every Postgres server process on this machine (backends, WAL writer, ...)."""
    return [pid for pid, _, cmdline in _processes() if cmdline.startswith(b"postgres")]


def serve(command: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="an empty Postgres database (it is migrated)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the four servers; the median ratios count")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--port", type=int, default=8931)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="warden-bench-"))
    # One key directory for every run, so checkpoints made by an earlier run still verify.
    keys = Path(tempfile.gettempdir()) / "warden-bench-keys"
    env = {**os.environ, "WARDEN_DATABASE_URL": args.database_url, "WARDEN_KEY_DIR": str(keys),
           "PYTHONPATH": str(HERE.parent)}
    warden("db", "upgrade", env=env)
    existing = head_seq(env)
    if existing:
        print(f"note: the ledger already holds {existing:,} records. Appends cost Postgres more as its indexes "
              "outgrow its cache, so runs on different ledgers do not compare; an empty database does.")
    (workdir / "policy.csv").write_text(POLICY)
    warden("policy", "load", "--replace", str(workdir / "policy.csv"), env=env)
    token = warden("token", "create", f"bench-{os.getpid()}", "--scope", "authorize", env=env).stdout.split()[0]
    before = head_seq(env)

    settings = ["--workers", str(args.workers), "--threads", str(args.threads)]
    # The bare server logs as `warden serve` does: the same access lines, to the same kind of daily files.
    (workdir / "bare-logging.json").write_text(json.dumps(log_config(str(workdir / "bare-logs"))))
    bare = [sys.executable, "-m", "gunicorn", "--worker-class", "authz.worker.WardenWorker", *settings,
            "--bind", f"127.0.0.1:{args.port}", "--access-logfile", "-",
            "--access-logformat", ACCESS_LOG_FORMAT, "--log-config-json", str(workdir / "bare-logging.json")]
    servers = {
        "bare": [*bare, "bench.bare_app:create_app()"],
        "bare-wsgi": [*bare, "bench.bare_app:plain_wsgi"],
        "bare-inline": [*bare, "bench.bare_app:create_app(inline=True)"],
        "authorize": [sys.executable, "-c", "import app; app.main()", "serve", *settings, "--port", str(args.port)],
    }
    print(f"settings: {args.workers} workers x {args.threads} threads, {args.connections} connections, "
          f"{args.seconds}s per run, Postgres synchronous_commit on")
    rounds = []
    for number in range(1, args.rounds + 1):
        rates = {name: measure(name, command, env, token, args) for name, command in servers.items()}
        rounds.append(rates)
        print(f"round {number}: " + "   ".join(f"{name} {rates[name]['rate']:.0f} req/s" for name in servers)
              + f" (authorize non-2xx: {rates['authorize']['non_2xx']})\n         ratio of authorize to "
              + ", ".join(f"{name} {ratio(rates, name):.2f}" for name in BASELINES), flush=True)
        print("         per request: " + "\n                      ".join(
            f"{name:<11} {r['worker_us']:.0f} µs CPU in workers, {r['postgres_us']:.0f} µs in Postgres, "
            f"{r['switches']:.1f} context switches" for name, r in rates.items()), flush=True)

    report = json.loads(subprocess.run([sys.executable, "-c", "import app; app.main()", "audit", "verify",
                                        "--json"], env=env, capture_output=True, text=True).stdout)
    for name in BASELINES:
        median = sorted(rounds, key=lambda rates: ratio(rates, name))[len(rounds) // 2]
        print(f"ratio authorize/{name} (median of {len(rounds)}): {ratio(median, name):.2f}   "
              f"({name} {median[name]['rate']:.0f} req/s, authorize {median['authorize']['rate']:.0f} req/s; "
              f"{BASELINES[name]})")
    print(f"ledger: {report['head_seq'] - before} records appended during the runs, verify ok={report['ok']}")


def head_seq(env: dict) -> int:
    """The sequence number of the ledger's last record (0: empty)."""
    return int(json.loads(warden("audit", "verify", "--json", env=env).stdout)["head_seq"])


BASELINES = {"bare": "Flask", "bare-wsgi": "a WSGI callable, no framework",
             "bare-inline": "on the worker's inline path, as authorize is; not an ordinary endpoint"}


def ratio(rates: dict, baseline: str = "bare") -> float:
    return rates["authorize"]["rate"] / rates[baseline]["rate"]


def measure(name: str, command: list[str], env: dict, token: str, args, tries: int = 4) -> dict:
    """Start one server, warm it up, load it with wrk, stop it; return its rate.

    wrk opens all its connections at once, and now and then one worker accepts every one of them
    while the others idle: the server then runs at one worker's speed. Such a run measures that
    accident, not the server, so it is measured again, up to `tries` runs in all (and said so)."""
    for attempt in range(1, tries + 1):
        result = _measure_once(name, command, env, token, args)
        if result["balanced"]:
            return result
        print(f"         ({name}: one worker took every connection, the others idled; "
              + ("measuring again)" if attempt < tries else f"kept anyway after {tries} runs)"), flush=True)
    return result


def _measure_once(name: str, command: list[str], env: dict, token: str, args) -> dict:
    server = serve(command, env)
    try:
        wait_until_up(f"http://127.0.0.1:{args.port}/healthz" if name == "authorize"
                      else f"http://127.0.0.1:{args.port}/")
        url = f"http://127.0.0.1:{args.port}/v1/authorize"
        run_wrk(url, token, 2, args.connections, args.wrk_threads)  # warm up
        workers, postgres = children(server.pid), postgres_pids()
        before = [usage([pid]) for pid in workers], usage(postgres)
        result = run_wrk(url, token, args.seconds, args.connections, args.wrk_threads)
        after = [usage([pid]) for pid in workers], usage(postgres)
        served = result["rate"] * args.seconds
        per_worker = [end[0] - start[0] for start, end in zip(before[0], after[0])]
        result.update(worker_us=sum(per_worker) / served * 1e6,
                      postgres_us=(after[1][0] - before[1][0]) / served * 1e6,
                      switches=sum(end[1] - start[1] for start, end in zip(before[0], after[0])) / served,
                      balanced=min(per_worker) >= 0.25 * max(per_worker))
        return result
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
