"""What a full run writes: the table into docs/PERFORMANCE.md (between the bench markers) and docs/performance.png."""
from __future__ import annotations

from bench.measure import TEMPLATE, Table

DOC = TEMPLATE / "docs" / "PERFORMANCE.md"
PLOT = TEMPLATE / "docs" / "performance.png"


def plot(results: dict) -> None:
    """The fleet (section 7) and the helpers against the interpreter's floor (sections 1 and 2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    helpers, collisions, fleet_out = results[1], results[2], results[7]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    sizes = sorted(fleet_out)
    ax.plot(sizes, [fleet_out[s][0] for s in sizes], "o-", label="time until all healthy (s)")
    ax.plot(sizes, [fleet_out[s][2] for s in sizes], "s--", label="time to nuke all (s)")
    ax.set_xlabel("copies started at once (2 cores)")
    ax.set_ylabel("seconds")
    ax2 = ax.twinx()
    ax2.plot(sizes, [fleet_out[s][1] for s in sizes], "^:", color="tab:green", label="memory per copy (MiB)")
    ax2.set_ylabel("MiB per copy")
    ax2.set_ylim(bottom=0)
    ax.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(lines, [h.get_label() for h in lines], loc="upper left", fontsize=8)
    ax.set_title("Fleet: cost per copy")
    ax = axes[1]
    labels = ["make env", "make ports", "check-ports"]
    ratios = [helpers["env"] / helpers["floor"], helpers["ports"] / helpers["floor"], collisions["check"] / collisions["floor"]]
    targets = [2, 2, 3]
    ax.bar(labels, ratios, color="tab:blue", label="measured (x interpreter start)")
    ax.scatter(labels, targets, color="tab:red", marker="_", s=600, label="target", zorder=3)
    ax.set_ylabel("x `python -c pass`")
    ax.set_title("Helpers vs the interpreter's floor")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=90)
    print(f"\nwrote {PLOT.relative_to(TEMPLATE)}")


def write_doc(table: Table, header: str) -> None:
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    text = DOC.read_text() if DOC.exists() else f"# Performance\n\n{begin}\n{end}\n"
    if begin not in text:
        text += f"\n{begin}\n{end}\n"
    before, rest = text.split(begin, 1)
    after = rest.split(end, 1)[1]
    DOC.write_text(f"{before}{begin}\n{header}\n\n{table.markdown()}\n![fleet and helper figures](performance.png)\n{end}{after}")
    print(f"wrote {DOC.relative_to(TEMPLATE)}")
