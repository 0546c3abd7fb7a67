#!/usr/bin/env python3
"""Turns bench/run.sh's raw results (one JSON line per cell and repeat) into the Markdown
report: absolute numbers (median and spread of the repeats), ratios, and the issue's targets."""
import argparse
import json
import statistics
from collections import defaultdict

WORKLOADS = {
    "w1": "keep-alive HTTP/1.1, 32 connections",
    "w2": "new mTLS connection per request, 32 in flight",
    "w3": "1 MiB responses, 8 connections",
    "w4": "HTTP/2, 8 connections x 100 streams",
    "w5": "idle connections held, then a burst",
    "l1": "HTTP terminated by the proxy: keep-alive HTTP/1.1, 32 connections",
    "l2": "HTTP terminated by the proxy: new mTLS connection per request, 32 in flight",
    "l4": "HTTP terminated by the proxy: HTTP/2, 8 connections x 100 streams",
}
TARGETS = ["direct", "eastwest", "haproxy-tcp", "haproxy-http", "nginx-stream", "nginx-http", "eastwest-chain", "haproxy-chain",
           "eastwest-http", "eastwest-http-vs50", "eastwest-http-resilience", "eastwest-http-token", "eastwest-http-authz", "eastwest-http-chain", "haproxy-http-chain"]


def load(path):
    cells = defaultdict(list)
    for line in open(path):
        if line.strip():
            row = json.loads(line)
            cells[(row["target"], row["workload"])].append(row)
    return cells


def median(values):
    return statistics.median(values) if values else 0.0


class Cell:
    def __init__(self, rows):
        self.rows = rows
        self.rps = [r["requestsPerSecond"] for r in rows]
        self.mbps = [r["bytesPerSecond"] / 1e6 for r in rows]
        self.p99 = [r["latencyMs"].get("p99", 0) for r in rows]
        self.errors = sum(sum(r["failed"].values()) for r in rows)
        self.sent = sum(r["sent"] for r in rows)
        # Proxy CPU per request (microseconds) and per MiB (milliseconds).
        self.cpu_us = [r["cpuSeconds"] / r["succeeded"] * 1e6 for r in rows if r["succeeded"]]
        self.cpu_mib = [r["cpuSeconds"] / (r["bytesPerSecond"] * r["seconds"] / 1048576) * 1e3
                        for r in rows if r["bytesPerSecond"] > 0]
        r = rows[0]
        self.held = r["succeeded"] / r["idleConnections"] if r["idleConnections"] else 0
        self.kib_per_conn = (r["rssPeakKiB"] - r["rssBaseKiB"]) / r["idleConnections"] if r["idleConnections"] else 0

    def spread(self, values, fmt):
        if not values:
            return "-"
        if len(values) == 1:
            return fmt.format(values[0])
        return (fmt + " [" + fmt + "–" + fmt + "]").format(median(values), min(values), max(values))


def ratio(a, b):
    return a / b if b else float("nan")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("results")
    for name in ["machine", "versions", "pinning", "command", "seconds", "repeats", "generator"]:
        parser.add_argument("--" + name, default="")
    args = parser.parse_args()
    cells = {key: Cell(rows) for key, rows in load(args.results).items()}

    out = ["# EastWest benchmark", ""]
    out += [f"- machine: {args.machine}", f"- versions: {args.versions}", f"- pinning: {args.pinning}",
            f"- each cell: {args.repeats} run(s) of {args.seconds} s (w5: one run); median [min–max]",
            f"- command: `{args.command}`", ""]
    out += ["Load from `eastwest load` (mTLS with a client certificate to every proxy; plaintext to the "
            "backend for `direct`). Backend: nginx, HTTP/1.1 and h2c. CPU is the proxy processes' user + "
            "system time over the cell, per answered request (µs) or per MiB (ms). "
            "`eastwest` runs with `--concurrency 1 --log-level warning`, HAProxy with `nbthread 1`, "
            "nginx with one worker; no access logs anywhere.", ""]

    for workload, title in WORKLOADS.items():
        present = [t for t in TARGETS if (t, workload) in cells]
        if not present:
            continue
        out += [f"## {workload}: {title}", ""]
        if workload == "w5":
            out += ["| target | held and answered | RSS per idle connection (KiB) | p99 ms of the burst |", "|---|---|---|---|"]
            for t in present:
                c = cells[(t, workload)]
                out.append(f"| {t} | {c.held * 100:.2f} % | {c.kib_per_conn:.1f} | {c.spread(c.p99, '{:.1f}')} |")
        else:
            out += ["| target | req/s | MB/s | p99 ms | proxy CPU µs/req | proxy CPU ms/MiB | errors |", "|---|---|---|---|---|---|---|"]
            for t in present:
                c = cells[(t, workload)]
                out.append(f"| {t} | {c.spread(c.rps, '{:.0f}')} | {c.spread(c.mbps, '{:.1f}')} | {c.spread(c.p99, '{:.2f}')} | "
                           f"{c.spread(c.cpu_us, '{:.1f}') if t != 'direct' else '-'} | "
                           f"{c.spread(c.cpu_mib, '{:.2f}') if t != 'direct' else '-'} | {c.errors} of {c.sent} |")
        out.append("")

    # Ratios against HAProxy (mode tcp, the same layer as EastWest), nginx stream and direct.
    has_l4 = any(w in ("w1", "w2", "w3", "w4") for (_, w) in cells)
    out += [] if not has_l4 else ["## Ratios", "", "| workload | EastWest / HAProxy tcp | EastWest / nginx stream | EastWest / direct | HAProxy tcp / direct | EastWest chain / HAProxy chain | CPU per request, EastWest / HAProxy tcp |",
            "|---|---|---|---|---|---|---|"]

    def throughput(t, w):
        c = cells.get((t, w))
        if not c:
            return None
        return median(c.mbps) if w == "w3" else median(c.rps)

    def fmt(x):
        return "-" if x is None or x != x else f"{x:.2f}×"

    for w in ["w1", "w2", "w3", "w4"] if has_l4 else []:
        ew, ha, ng, di = (throughput(t, w) for t in ["eastwest", "haproxy-tcp", "nginx-stream", "direct"])
        ewc, hac = throughput("eastwest-chain", w), throughput("haproxy-chain", w)
        cpu = None
        if ("eastwest", w) in cells and ("haproxy-tcp", w) in cells:
            cpu = ratio(median(cells[("eastwest", w)].cpu_us), median(cells[("haproxy-tcp", w)].cpu_us))
        out.append(f"| {w} | {fmt(ew and ha and ratio(ew, ha))} | {fmt(ew and ng and ratio(ew, ng))} | {fmt(ew and di and ratio(ew, di))} | "
                   f"{fmt(ha and di and ratio(ha, di))} | {fmt(ewc and hac and ratio(ewc, hac))} | {fmt(cpu)} |")
    out.append("")

    # The targets, each judged on this run.
    checks = []

    def check(name, ok, detail):
        checks.append(f"| {name} | {'met' if ok else 'NOT met'} | {detail} |")

    def both(w, a="eastwest", b="haproxy-tcp"):
        return (a, w) in cells and (b, w) in cells

    if both("w1"):
        e, h = cells[("eastwest", "w1")], cells[("haproxy-tcp", "w1")]
        r, c, p = ratio(median(e.rps), median(h.rps)), ratio(median(e.cpu_us), median(h.cpu_us)), ratio(median(e.p99), median(h.p99))
        check("w1 ≥ 1.0× HAProxy req/s, ≤ 1.0× CPU/req, p99 ≤", r >= 1 and c <= 1 and p <= 1, f"{r:.2f}× req/s, {c:.2f}× CPU/req, {p:.2f}× p99")
    if both("w2"):
        r = ratio(median(cells[("eastwest", "w2")].rps), median(cells[("haproxy-tcp", "w2")].rps))
        check("w2 ≥ 2.0× HAProxy handshakes/s", r >= 2, f"{r:.2f}×")
    if both("w3"):
        e, h = cells[("eastwest", "w3")], cells[("haproxy-tcp", "w3")]
        r, c = ratio(median(e.mbps), median(h.mbps)), ratio(median(e.cpu_mib), median(h.cpu_mib))
        check("w3 ≥ 1.0× HAProxy MB/s, ≤ 0.7× CPU/MiB", r >= 1 and c <= 0.7, f"{r:.2f}× MB/s, {c:.2f}× CPU/MiB")
    if both("w4"):
        r = ratio(median(cells[("eastwest", "w4")].rps), median(cells[("haproxy-tcp", "w4")].rps))
        check("w4 ≥ 1.0× HAProxy", r >= 1, f"{r:.2f}×")
    for w in ["w1", "w2", "w4"]:
        if both(w, "eastwest-chain", "haproxy-chain"):
            r = ratio(median(cells[("eastwest-chain", w)].rps), median(cells[("haproxy-chain", w)].rps))
            check(f"two-hop chain {w} ≥ 1.0× HAProxy chained", r >= 1, f"{r:.2f}×")
    if both("w5"):
        e, h = cells[("eastwest", "w5")], cells[("haproxy-tcp", "w5")]
        check("w5 all connections held, memory/idle connection ≤ HAProxy's", e.held >= 1 and e.kib_per_conn <= h.kib_per_conn,
              f"held {e.held * 100:.2f} %, {e.kib_per_conn:.1f} vs {h.kib_per_conn:.1f} KiB")
    if checks:
        out += ["## Targets (issue 7)", "", "| target | this run | measured |", "|---|---|---|"] + checks + [""]

    # HTTP terminated by every proxy: EastWest's connection manager against HAProxy mode http and
    # nginx http, and the HTTP targets.
    if any(w in ("l1", "l2", "l4") for (_, w) in cells):
        out += ["## HTTP ratios", "", "| workload | EastWest / HAProxy http | EastWest / nginx http | CPU per request, EastWest / HAProxy http | p99, EastWest / HAProxy http | EastWest chain / HAProxy chain (http) |",
                "|---|---|---|---|---|---|"]
        for w in ["l1", "l2", "l4"]:
            ew, ha, ng = (throughput(t, w) for t in ["eastwest-http", "haproxy-http", "nginx-http"])
            ewc, hac = throughput("eastwest-http-chain", w), throughput("haproxy-http-chain", w)
            cpu = p99 = None
            if both(w, "eastwest-http", "haproxy-http"):
                e, h = cells[("eastwest-http", w)], cells[("haproxy-http", w)]
                cpu, p99 = ratio(median(e.cpu_us), median(h.cpu_us)), ratio(median(e.p99), median(h.p99))
            out.append(f"| {w} | {fmt(ew and ha and ratio(ew, ha))} | {fmt(ew and ng and ratio(ew, ng))} | {fmt(cpu)} | {fmt(p99)} | "
                       f"{fmt(ewc and hac and ratio(ewc, hac))} |")
        out.append("")
        http_checks = []

        def http_check(name, ok, detail):
            http_checks.append(f"| {name} | {'met' if ok else 'NOT met'} | {detail} |")

        for w in ["l1", "l4"]:
            if both(w, "eastwest-http", "haproxy-http"):
                e, h = cells[("eastwest-http", w)], cells[("haproxy-http", w)]
                r, c, p = ratio(median(e.rps), median(h.rps)), ratio(median(e.cpu_us), median(h.cpu_us)), ratio(median(e.p99), median(h.p99))
                http_check(f"{w} ≥ 1.0× HAProxy http req/s, ≤ 1.0× CPU/req, p99 ≤", r >= 1 and c <= 1 and p <= 1,
                           f"{r:.2f}× req/s, {c:.2f}× CPU/req, {p:.2f}× p99")
        def cost(target, name, limit, base="eastwest-http"):
            # The cost rows' l1 cells take turns with the plain route's (bench/run.sh), so each
            # round's pair ran minutes apart at most: judged by the median of the per-round
            # ratios, which the machine's drift moves far less than a ratio of medians.
            if not both("l1", target, base):
                return
            def per_round(t):
                return {r["repeat"]: r["cpuSeconds"] / r["succeeded"] * 1e6 for r in cells[(t, "l1")].rows if r["succeeded"]}
            a, b = per_round(target), per_round(base)
            rotated = all(r.get("rotated") for t in (target, base) for r in cells[(t, "l1")].rows)
            # Runs from before the rotation ran each target's repeats in a row: no pairs.
            pairs = [a[k] / b[k] for k in sorted(a) if k in b] if rotated else []
            of_medians = ratio(median(cells[(target, "l1")].cpu_us), median(cells[(base, "l1")].cpu_us))
            if len(pairs) > 1:
                c = median(pairs)
                detail = f"{c:.2f}× (median of {len(pairs)} per-round ratios, {min(pairs):.2f}–{max(pairs):.2f}; ratio of medians {of_medians:.2f}×)"
            else:
                c, detail = of_medians, f"{of_medians:.2f}×"
            http_check(name, c <= limit, detail)

        cost("eastwest-http-vs50", "a 50-rule VirtualService ≤ 1.10× the CPU/req of one rule (l1)", 1.10)
        cost("eastwest-http-resilience", "retries, a timeout and faults configured but not firing ≤ 1.03× the CPU/req of one plain rule (l1)", 1.03)
        # Against the plain route carrying the same token when the run has it (earlier runs: without).
        cost("eastwest-http-authz", "a 20-rule AuthorizationPolicy and a JWT check ≤ 1.15× the CPU/req of the same route without (l1)", 1.15,
             base="eastwest-http-token" if ("eastwest-http-token", "l1") in cells else "eastwest-http")
        if both("l2", "eastwest-http-chain", "haproxy-http-chain"):
            r = ratio(median(cells[("eastwest-http-chain", "l2")].rps), median(cells[("haproxy-http-chain", "l2")].rps))
            http_check("two-hop HTTP chain, new client connection per request ≥ 2.5× HAProxy chained", r >= 2.5, f"{r:.2f}×")
        if http_checks:
            out += ["## Targets (issue 16, HTTP)", "", "| target | this run | measured |", "|---|---|---|"] + http_checks + [""]
    if args.generator:
        gen = dict(part.split("=") for part in args.generator.split())
        ours = [f"eastwest load w1 direct {median(cells[('direct', 'w1')].rps):.0f} req/s" if ("direct", "w1") in cells else None,
                f"w4 direct {median(cells[('direct', 'w4')].rps):.0f} req/s" if ("direct", "w4") in cells else None]
        out += ["## The load generator is not the bottleneck", "",
                f"Against the plain backend, same core: {', '.join(x for x in ours if x)}; "
                f"wrk (1 thread, 32 connections) {gen.get('wrk', '-')} req/s; h2load (8 × 100 streams) {gen.get('h2load', '-')} req/s.", ""]
    print("\n".join(out))


if __name__ == "__main__":
    main()
