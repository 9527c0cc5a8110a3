"""Figures and a table for the documentation's Performance page, from a bench JSON report.

    python docs/bench/plot_bench.py [--json docs/bench/bench.json] [--out docs/_generated]

writes ``bench_batch.png`` (samples/s against batch size, one panel per network),
``bench_width.png`` (samples/s against the hidden width, one panel per depth and batch size) and
``bench_table.md`` (every workload and engine, for the page to include). The input is the
report of ``python -m fastbp bench --json PATH``: ``config.workloads`` gives each workload's
``layers`` and ``batch``, ``results`` one row per workload and engine (median ``samples_per_s``
and the rounds' values in ``samples_per_s_runs``). Workloads are grouped from their
configuration, not from their names: the batch figure joins workloads with the same layers,
the width figure those with the same depth, batch size, inputs and outputs whose hidden layers
all have one width. The docs build runs this script (``docs/conf.py``) when the JSON or the
script is newer than the figures. Needs only matplotlib (Agg backend) and the JSON.
"""
import argparse
import json
import math
import os
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_JSON = os.path.join(HERE, "bench.json")
DEFAULT_OUT = os.path.join(os.path.dirname(HERE), "_generated")
OUTPUTS = ("bench_batch.png", "bench_width.png", "bench_table.md")

# fastbp first and always in the same colour; the peers in the order the report lists them
COLORS = ("#1f4e9c", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")


def load(path):
    """``(config, rows)`` of a bench report; rows without a measurement are dropped."""
    with open(path) as fh:
        report = json.load(fh)
    rows = [r for r in report["results"] if r.get("samples_per_s")]
    return report["config"], rows


def engines_of(config, rows):
    """Engines in the report's order, fastbp first."""
    seen = [e for e in config.get("engines", []) if any(r["engine"] == e for r in rows)]
    seen += sorted({r["engine"] for r in rows} - set(seen))
    return sorted(seen, key=lambda e: e != "fastbp")


def shape_name(layers):
    return "-".join(str(n) for n in layers)


def _sweeps(groups):
    """The groups with two x values or more, each as ``[(x, workload), ...]`` sorted by x; of
    workloads with the same x (the same network and batch size under two names) the first
    listed in the report is kept."""
    sweeps = {}
    for key, points in groups.items():
        first = {}
        for x, name in points:
            first.setdefault(x, name)
        if len(first) > 1:
            sweeps[key] = sorted(first.items())
    return sweeps


def batch_groups(config):
    """``{layers: [(batch, workload), ...]}`` for layers measured at two batch sizes or more."""
    groups = defaultdict(list)
    for name, w in config["workloads"].items():
        groups[tuple(w["layers"])].append((w["batch"], name))
    return _sweeps(groups)


def width_groups(config):
    """``{(depth, batch, n_in, n_out): [(width, workload), ...]}`` over workloads whose hidden
    layers share one width, for groups measured at two widths or more."""
    groups = defaultdict(list)
    for name, w in config["workloads"].items():
        hidden = w["layers"][1:-1]
        if hidden and len(set(hidden)) == 1:
            key = (len(hidden), w["batch"], w["layers"][0], w["layers"][-1])
            groups[key].append((hidden[0], name))
    return _sweeps(groups)


def width_title(key):
    depth, batch, n_in, n_out = key
    return f"{'-'.join([str(n_in)] + ['W'] * depth + [str(n_out)])}, batch {batch}"


def _panels(plt, groups, title, what, xlabel, config, rows, engines):
    """One panel per group: samples/s of every engine against the group's x values (log-log),
    the median as a line, the spread of the rounds as a bar."""
    n = max(len(groups), 1)
    ncols = min(n, 3)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.6 * nrows + 0.4),
                             squeeze=False)
    axes = axes.ravel()
    for ax in axes[len(groups):]:
        ax.set_axis_off()
    if not groups:
        axes[0].text(0.5, 0.5, f"no {what} sweep in this report",
                     ha="center", va="center", transform=axes[0].transAxes)
    by_key = {(r["workload"], r["engine"]): r for r in rows}
    for ax, (key, points) in zip(axes, sorted(groups.items())):
        for k, engine in enumerate(engines):
            xs, ys, lo, hi = [], [], [], []
            for x, name in points:
                r = by_key.get((name, engine))
                if r is None:
                    continue
                runs = r.get("samples_per_s_runs") or [r["samples_per_s"]]
                xs.append(x)
                ys.append(r["samples_per_s"])
                lo.append(r["samples_per_s"] - min(runs))
                hi.append(max(runs) - r["samples_per_s"])
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", ms=4, capsize=2, label=engine,
                            color=COLORS[k % len(COLORS)], lw=2.2 if engine == "fastbp" else 1.3)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        xticks = sorted({x for x, _ in points})
        ax.set_xticks(xticks, [str(x) for x in xticks])
        ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_ylabel("samples/s (median)")
        ax.set_title(title(key), fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(caption(config), fontsize=8, y=0.01, va="bottom")
    fig.tight_layout(rect=(0, 0.4 / (3.6 * nrows + 0.4), 1, 1))
    return fig


def caption(config, platform=False):
    """What was measured, in a line: dtype, threads, rounds, machine, date."""
    where = f"{config.get('platform', '?')}, " if platform else ""
    rounds, epochs = config.get("rounds", "?"), config.get("epochs", "?")
    return (f"{config.get('dtype', '?')}, {config.get('threads', '?')} threads, median of "
            f"{rounds} round{'s' * (rounds != 1)} of {epochs} epoch{'s' * (epochs != 1)}; "
            f"{where}{config.get('cpu_count', '?')} CPUs, {str(config.get('date', '?'))[:10]}")


def plot(config, rows, out):
    """Write the two figures into the folder ``out``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    engines = engines_of(config, rows)
    figures = {
        "bench_batch.png": _panels(plt, batch_groups(config), shape_name, "batch size",
                                   "batch size (samples per step)", config, rows, engines),
        "bench_width.png": _panels(plt, width_groups(config), width_title, "width",
                                   "hidden width W (units)", config, rows, engines),
    }
    for name, fig in figures.items():
        fig.savefig(os.path.join(out, name), dpi=110)
        plt.close(fig)


def _number(x):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.0f}"


def table(config, rows):
    """A Markdown table: one line per workload, samples/s per engine, fastbp over the fastest
    peer."""
    engines = engines_of(config, rows)
    by_key = {(r["workload"], r["engine"]): r["samples_per_s"] for r in rows}
    head = ["workload", "layers", "batch"] + engines + ["fastbp / best peer"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for name, w in config["workloads"].items():
        values = [by_key.get((name, e)) for e in engines]
        peers = [v for e, v in zip(engines, values) if e != "fastbp" and v]
        fb = by_key.get((name, "fastbp"))
        ratio = f"{fb / max(peers):.2f}" if fb and peers else "-"
        lines.append("| " + " | ".join([name, shape_name(w["layers"]), str(w["batch"])]
                                       + [_number(v) for v in values] + [ratio]) + " |")
    return "\n".join(lines) + f"\n\nSamples/s; {caption(config, platform=True)}.\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default=DEFAULT_JSON, help="bench report (default: %(default)s)")
    p.add_argument("--out", default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    args = p.parse_args(argv)
    config, rows = load(args.json)
    os.makedirs(args.out, exist_ok=True)
    plot(config, rows, args.out)
    with open(os.path.join(args.out, "bench_table.md"), "w") as fh:
        fh.write(table(config, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
