# Sourced by the bench scripts: `timed LABEL CMD...` runs CMD once under GNU time and appends
# "label wall_s cpu_s peak_rss_kib" to $work/results (CMD's output goes to $work/last.log).
timed() {
    local label=$1
    shift
    /usr/bin/time -v -o "$work/time" "$@" > "$work/last.log" 2>&1 || {
        echo "$label failed:" >&2
        tail -20 "$work/last.log" >&2
        exit 1
    }
    python3 - "$work/time" "$label" >> "$work/results" <<'PY'
import sys
fields = {}
for line in open(sys.argv[1]):
    key, _, value = line.strip().rpartition(": ")
    fields[key] = value
wall = fields["Elapsed (wall clock) time (h:mm:ss or m:ss)"].split(":")
seconds = sum(float(p) * 60 ** i for i, p in enumerate(reversed(wall)))
cpu = float(fields["User time (seconds)"]) + float(fields["System time (seconds)"])
print(sys.argv[2], f"{seconds:.3f}", f"{cpu:.3f}", fields["Maximum resident set size (kbytes)"])
PY
}
