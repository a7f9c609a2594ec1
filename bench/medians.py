"""The results file `timed` (bench/timed.sh) appends to, read back: each label's runs and the
median of each measure (wall s, CPU s, peak RSS KiB)."""
import statistics
from collections import defaultdict


def medians(path):
    rows = defaultdict(list)
    for line in open(path):
        label, wall, cpu, rss = line.split()
        rows[label].append((float(wall), float(cpu), int(rss)))
    med = {k: tuple(statistics.median(v[i] for v in vs) for i in range(3)) for k, vs in rows.items()}
    return rows, med
