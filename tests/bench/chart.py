"""Latency against offered load, from tests/bench/results/webhook.json, to tests/bench/latency.png."""
import json
import pathlib

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

here = pathlib.Path(__file__).parent
data = json.loads((here / "results" / "webhook.json").read_text())
fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
summary = data["summary"]
for proto, style in (("http1", "-"), ("http2", "--")):
    rows = [r for r in summary if r["protocol"] == proto]
    rates = [r["offered_rps"] for r in rows]
    for key, label, color in (("p50_ms", "p50", "tab:green"), ("p99_ms", "p99", "tab:orange"), ("p99_9_ms", "p99.9", "tab:red")):
        ax.plot(rates, [r[key]["median"] for r in rows], style, marker="o", color=color, label=f"{label} ({proto})")
for proto, style in (("http1", ":"), ("http2", "-.")):
    control = [r for r in summary if r["protocol"] == proto]
    if control:
        ax.plot([r["offered_rps"] for r in control], [r["control_p99_ms"]["median"] for r in control], style, marker="x",
                color="grey", label=f"p99 of /healthz, no work ({proto}, control)")
ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
ax.text(rates[0], 1.08, "1 ms target (p99)", color="grey", fontsize=8)
ax.set_xlabel("offered load (AdmissionReviews / s, Deployment with 3 containers, warm cache)")
ax.set_ylabel("latency (ms)")
ax.set_yscale("log")
ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
ax.set_xticks(rates)
ax.grid(True, which="both", alpha=0.3)
ax.legend(fontsize=7, ncol=2, loc="center right")
ax.set_title("pullguard serve over HTTPS, loopback, steady state, median of the repeats:\nserver on 1 core, oha on the other", fontsize=10)
fig.tight_layout()
fig.savefig(here / "latency.png")
print("wrote", here / "latency.png")
