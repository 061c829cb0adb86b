"""Medians of a bench script's results, side by side: one row per (measure, metric), the
median of each server's runs and the ratio ringcache/memcached. Prints the table and, with
an output path, writes it as Markdown under a title and a paragraph saying how it was made.

    python3 bench/lib/table.py RESULTS.tsv [OUT.md TITLE DESCRIPTION]

RESULTS.tsv: measure <tab> metric <tab> server <tab> value, one run per line (see servers.sh).
"""
import statistics
import sys


def fmt(v):
    if v is None or v != v:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.1f}" if abs(v) >= 100 else f"{v:.3f}"


def main():
    path = sys.argv[1]
    runs = {}
    for line in open(path):
        measure, metric, server, value = line.rstrip("\n").split("\t")
        runs.setdefault((measure, metric), {}).setdefault(server, []).append(float(value))
    rows = []
    for (measure, metric), by in runs.items():
        mc = statistics.median(by["memcached"]) if "memcached" in by else None
        rc = statistics.median(by["ringcache"]) if "ringcache" in by else None
        ratio = rc / mc if mc and rc is not None and mc == mc and rc == rc else None
        rows.append((measure, metric, fmt(mc), fmt(rc), "-" if ratio is None else f"{ratio:.2f}"))
    head = ("measure", "metric", "memcached", "ringcache", "rc/mc")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(5)]
    for r in [head] + rows:
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    if len(sys.argv) >= 5:
        out, title, description = sys.argv[2:5]
        with open(out, "w") as f:
            f.write(f"# {title}\n\n{description}\n\n")
            f.write("| " + " | ".join(head) + " |\n|---|---|---:|---:|---:|\n")
            for r in rows:
                f.write("| " + " | ".join(r) + " |\n")
        print(f"\nwrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
