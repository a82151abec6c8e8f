"""The chart of a `make run TIMELINE=path.csv` run: jobs and consumers over time, with the minimum and the
maximum. run.py draws it when the run stops; to draw it again from the CSV:

    .venv/bin/python tools/timeline.py path.csv --min 1 --max 20 --title "..."

matplotlib is a development dependency (requirements-dev.txt), never in the images.
"""

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: a PNG file, here and in CI
import matplotlib.pyplot as plt  # noqa: E402


def read(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {key: [float(row[key]) for row in rows] for key in ("seconds", "jobs", "desired", "consumers")}


def draw(path, low, high, title, png=None):
    """Draw path's timeline into png (path with .png by default); returns the PNG's path."""
    path = Path(path)
    png = Path(png) if png else path.with_suffix(".png")
    data = read(path)
    fig, jobs_axis = plt.subplots(figsize=(10, 5), dpi=100)
    consumers_axis = jobs_axis.twinx()
    # The query's result is a sample at each evaluation; the consumers change at evaluations and stay.
    jobs_axis.plot(
        data["seconds"],
        data["jobs"],
        color="tab:blue",
        marker=".",
        markersize=4,
        label="jobs counted by the trigger's query, at each evaluation",
    )
    consumers_axis.step(
        data["seconds"],
        data["consumers"],
        where="post",
        color="tab:orange",
        label="consumer processes alive (those finishing a last job included)",
    )
    for value, name in ((low, "min"), (high, "max")):
        consumers_axis.axhline(value, color="tab:orange", linestyle="--", linewidth=1)
        consumers_axis.annotate(
            f"{name} {value}",
            xy=(1, value),
            xycoords=("axes fraction", "data"),
            xytext=(-4, 3),
            textcoords="offset points",
            ha="right",
            color="tab:orange",
            fontsize=8,
        )
    jobs_axis.set_xlabel("time since start (s)")
    jobs_axis.set_ylabel("jobs (rows in the jobs table)", color="tab:blue")
    consumers_axis.set_ylabel("consumers (processes)", color="tab:orange")
    jobs_axis.set_ylim(bottom=0)
    consumers_axis.set_ylim(0, high * 1.1 + 1)
    jobs_axis.set_xlim(0, max(data["seconds"] + [1]))
    handles = jobs_axis.get_legend_handles_labels()[0] + consumers_axis.get_legend_handles_labels()[0]
    jobs_axis.legend(handles, [h.get_label() for h in handles], loc="upper right", bbox_to_anchor=(1, 0.9), fontsize=8)
    jobs_axis.set_title(title, fontsize=10)
    jobs_axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return png


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument("--min", type=int, required=True, dest="low", help="the ScaledObject's minReplicaCount")
    parser.add_argument("--max", type=int, required=True, dest="high", help="its maxReplicaCount")
    parser.add_argument("--title", default="consumers sized by the KEDA/HPA emulation")
    parser.add_argument("--png", type=Path, help="where to draw (default: the CSV's path with .png)")
    args = parser.parse_args()
    print(draw(args.csv, args.low, args.high, args.title, args.png))


if __name__ == "__main__":
    main()
