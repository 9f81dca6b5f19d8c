#!/usr/bin/env python3
"""Draws BENCHMARKS.md's plots from the JSON that `make bench` leaves in target/bench/.

    target/bench/ferrocam-latency.json   bench-latency (glass to glass, first frame)
    target/bench/viewers.json            bench-viewers (device CPU/RSS by viewers)
    target/bench/peers.json              bench-peers (Janus, aiortc: same measures)
    target/bench/network.json            bench-network (a narrow uplink's steps, three senders)

Writes docs/bench/latency-cdf.png, cpu-vs-viewers.png, ttff-breakdown.png and network.png
(each from whichever of those files exist). Needs matplotlib
(`make bench` installs it into target/bench/venv).
"""
import json
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
BENCH = ROOT / "target" / "bench"
OUT = ROOT / "docs" / "bench"
STEPS = ["answer", "ice_connected", "dtls_connected", "first_packet", "first_frame"]
# The page's mark "answer" is the server's SDP arriving, whichever side offered.
LABELS = {"answer": "server's SDP received"}
COLORS = {"ferrocam": "#d9480f", "janus": "#1c7ed6", "aiortc": "#2b8a3e", "chromium": "#7048e8",
          "ferrocam-buffered": "#f59f00"}


def load(name):
    path = BENCH / name
    return json.loads(path.read_text()) if path.exists() else None


def peers():
    """Every peer's results as one list of dicts with ferrocam's first."""
    out = []
    latency, viewers = load("ferrocam-latency.json"), load("viewers.json")
    if latency:
        out.append({
            "peer": "ferrocam",
            "g2g_samples": latency["chromium"].get("g2g_samples", []),
            "ttff_steps": {k: v["p50"] for k, v in latency["chromium"]["ttff_ms"].items()},
            "cpu": (viewers or {}).get("cpu", []),
        })
        # The same page with the browser writing the offer: first frame only (its CPU and
        # glass to glass do not depend on who offers).
        browser_offer = latency["chromium"].get("ttff_browser_offer_ms")
        if browser_offer:
            out.append({
                "peer": "ferrocam, browser offers",
                "g2g_samples": [],
                "ttff_steps": {k: v["p50"] for k, v in browser_offer.items()},
                "cpu": [],
            })
    others = load("peers.json") or []
    for p in others if isinstance(others, list) else others.get("peers", []):
        steps = p.get("ttff_ms", {}).get("steps", {})
        out.append({
            "peer": p["peer"],
            "g2g_samples": p.get("g2g_ms", {}).get("samples", []),
            "ttff_steps": {k: (v["p50"] if isinstance(v, dict) else v) for k, v in steps.items()},
            "cpu": p.get("cpu", []),
        })
    return out


def latency_cdf(results):
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        s = sorted(r["g2g_samples"])
        if not s:
            continue
        ax.plot(s, [(i + 1) / len(s) for i in range(len(s))], label=f'{r["peer"]} (n={len(s)})',
                color=COLORS.get(r["peer"]))
    ax.set_xlabel("glass to glass, capture → displayed in Chromium (ms)")
    ax.set_ylabel("fraction of frames")
    ax.set_title("Glass-to-glass latency, 1280×720 @ 30 fps, 2 Mbit/s, loopback")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "latency-cdf.png", dpi=110)


def cpu_vs_viewers(results):
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        pts = sorted((c["viewers"], c["cpu_pct"]) for c in r["cpu"])
        if pts:
            ax.plot(*zip(*pts), marker="o", label=r["peer"], color=COLORS.get(r["peer"]))
    ax.set_xlabel("viewers")
    ax.set_ylabel("server CPU (% of one core)")
    ax.set_yscale("log")
    ax.set_title("CPU by number of viewers (device / media server process)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "cpu-vs-viewers.png", dpi=110)


def ttff_breakdown(results):
    fig, ax = plt.subplots(figsize=(7, 3.2))
    names = [r["peer"] for r in results if r["ttff_steps"]]
    for y, r in enumerate(r for r in results if r["ttff_steps"]):
        start = 0.0
        for step in STEPS:
            at = r["ttff_steps"].get(step)
            if at is None or at < start:
                continue
            ax.barh(y, at - start, left=start, label=LABELS.get(step, step) if y == 0 else None,
                    color=plt.cm.viridis(STEPS.index(step) / len(STEPS)))
            start = at
        ax.text(start + 3, y, f"{start:.0f} ms", va="center")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("ms after the click (p50 of each step)")
    ax.set_title("Time to first frame in Chromium, by step")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "ttff-breakdown.png", dpi=110)


def network(run):
    """Received bitrate and decoded width, second by second, against the link's rate."""
    fig, (rate, width) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True,
                                      gridspec_kw={"height_ratios": [2, 1]})
    step_s = run["step_s"]
    link = []
    for kbps in run["links_kbps"]:
        link += [kbps] * step_s
    seconds = range(1, len(link) + 1)
    rate.step(seconds, link, where="pre", color="black", linestyle="--", label="link (tc tbf)")
    for sender in run["senders"]:
        kbps = [k for step in sender["steps"] for k in step["kbps_per_second"]]
        widths = [w for step in sender["steps"] for w in step["width_per_second"]]
        color = COLORS.get(sender["name"])
        rate.plot(range(1, len(kbps) + 1), kbps, label=sender["name"], color=color)
        # Bits that arrive are not a picture: say where a sender showed none.
        for i, step in enumerate(sender["steps"]):
            if step["fps"] < 1:
                rate.text((i + 0.5) * step_s, step["link_kbps"] + 80,
                          f'{sender["name"]}: no picture', color=color, ha="center", fontsize=8)
        width.plot(range(1, len(widths) + 1), widths, label=sender["name"], color=color)
    rate.set_ylabel("received kbit/s")
    rate.set_title("A narrow uplink: 3000 → 1000 → 500 → 3000 kbit/s, one viewer in Chromium")
    rate.grid(alpha=0.3)
    rate.legend(fontsize=8)
    width.set_ylabel("decoded width (px)")
    width.set_title("decoded width (lines at the same width lie on top of each other)", fontsize=9)
    width.set_xlabel("seconds")
    width.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(OUT / "network.png", dpi=110)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    results = peers()
    run = load("network.json")
    if not results and not run:
        sys.exit("no results in target/bench: run make bench first")
    if results:
        latency_cdf(results)
        cpu_vs_viewers(results)
        ttff_breakdown(results)
    if run:
        network(run)
    print("wrote", ", ".join(str(p.relative_to(ROOT)) for p in sorted(OUT.glob("*.png"))))


if __name__ == "__main__":
    main()
