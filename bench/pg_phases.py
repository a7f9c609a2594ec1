#!/usr/bin/env python3
"""The PostgreSQL server's CPU time per phase of a restore (data, indexes, constraints, other).

  pg_phases.py sample OUT          samples every postgres process's CPU (utime+stime, from
                                   /proc/PID/stat) every 10 ms into OUT until killed (SIGTERM)
  pg_phases.py report OUT LOG LABEL WALL RESULTS
                                   with the server's log (log_min_duration_statement = 0,
                                   log_line_prefix '%m [%p] '): each phase's wall time (the union
                                   of its statements' intervals) and CPU seconds, appended to
                                   RESULTS as one JSON line
  pg_phases.py summary RESULTS     medians per label and phase

A statement's CPU is what its backend and the parallel workers it led ("parallel worker for
PID n") used between the statement's start (its end minus its duration) and its end. Used by
bench/restore-db.sh to tell how far 2 cores are from the floor of a parallel restore.
"""
import json
import os
import re
import signal
import statistics
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def postgres_processes():
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        if comm != "postgres":
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        yield int(name), int(fields[11]) + int(fields[12])


def sample(out):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    leaders = {}
    with open(out, "w") as f:
        while not stop:
            now = time.time()
            for pid, ticks in postgres_processes():
                if pid not in leaders:
                    try:
                        with open(f"/proc/{pid}/cmdline", "rb") as c:
                            cmd = c.read().decode(errors="replace")
                    except OSError:
                        cmd = ""
                    m = re.search(r"parallel worker for PID (\d+)", cmd)
                    leaders[pid] = int(m.group(1)) if m else pid
                f.write(f"{now:.4f} {pid} {leaders[pid]} {ticks}\n")
            time.sleep(0.01)


def phase_of(statement):
    s = " ".join(statement.split()).upper()
    if s.startswith("COPY "):
        return "data"
    if s.startswith("CREATE INDEX") or s.startswith("CREATE UNIQUE INDEX"):
        return "indexes"
    if s.startswith("ALTER TABLE") and "ADD CONSTRAINT" in s:
        if "FOREIGN KEY" in s or "REFERENCES" in s:
            return "constraints"
        if "PRIMARY KEY" in s or " UNIQUE " in s:
            return "indexes"
    return "other"


def report(out, log, label, wall_s, results):
    # (start, end, pid, phase) of every statement the server logged.
    line_re = re.compile(
        r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) \w+ \[(\d+)\] LOG:  duration: ([\d.]+) ms  "
        r"(?:statement|execute [^:]*): (.*)$"
    )
    # A statement written over several lines continues on lines without the prefix.
    entries = []
    for line in open(log, errors="replace"):
        if re.match(r"^\d{4}-\d\d-\d\d ", line) or not entries:
            entries.append(line.rstrip("\n"))
        else:
            entries[-1] += " " + line.strip()
    statements = []
    for line in entries:
        m = line_re.match(line)
        if not m:
            continue
        end = time.mktime(time.strptime(m.group(1)[:19], "%Y-%m-%d %H:%M:%S")) + float(
            "0" + m.group(1)[19:]
        )
        duration = float(m.group(3)) / 1000
        statements.append((end - duration, end, int(m.group(2)), phase_of(m.group(4))))
    # CPU ticks per (leader pid) between consecutive samples, attributed to the sample's time.
    last = {}
    deltas = []  # (time, leader, ticks)
    for row in open(out):
        t, pid, leader, ticks = row.split()
        t, pid, leader, ticks = float(t), int(pid), int(leader), int(ticks)
        if pid in last:
            d = ticks - last[pid]
            if d > 0:
                deltas.append((t, leader, d))
        last[pid] = ticks
    phases = {}
    for start, end, pid, phase in statements:
        cpu = sum(d for t, leader, d in deltas if leader == pid and start <= t <= end + 0.011)
        p = phases.setdefault(phase, {"cpu": 0.0, "intervals": []})
        p["cpu"] += cpu / TICK
        p["intervals"].append((start, end))
    total_cpu = sum(d for _, _, d in deltas) / TICK
    row = {"label": label, "wall": wall_s, "all_cpu": total_cpu}
    for name, p in phases.items():
        wall, until = 0.0, 0.0
        for s, e in sorted(p["intervals"]):
            s = max(s, until)
            if e > s:
                wall += e - s
                until = e
        row[name] = {"wall": wall, "cpu": p["cpu"]}
    with open(results, "a") as f:
        f.write(json.dumps(row) + "\n")


def summary(results):
    rows = [json.loads(line) for line in open(results)]
    labels = list(dict.fromkeys(r["label"] for r in rows))
    med = lambda values: statistics.median(values) if values else 0.0
    print(f"  medians of {len(rows) // max(len(labels), 1)} runs; wall s / the server's CPU s")
    print(f"  {'':22s} {'whole':>12s} {'data':>12s} {'indexes':>12s} {'constraints':>12s}")
    for label in labels:
        mine = [r for r in rows if r["label"] == label]
        cells = [f"{med([r['wall'] for r in mine]):5.2f} / {med([r['all_cpu'] for r in mine]):4.2f}"]
        for phase in ["data", "indexes", "constraints"]:
            have = [r[phase] for r in mine if phase in r]
            cells.append(
                f"{med([p['wall'] for p in have]):5.2f} / {med([p['cpu'] for p in have]):4.2f}"
                if have
                else "-"
            )
        print(f"  {label:22s} " + " ".join(f"{c:>12s}" for c in cells))


if __name__ == "__main__":
    if sys.argv[1] == "sample":
        sample(sys.argv[2])
    elif sys.argv[1] == "report":
        report(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), sys.argv[6])
    else:
        summary(sys.argv[2])
