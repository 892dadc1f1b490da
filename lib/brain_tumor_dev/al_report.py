"""Outputs of the active-learning simulation: the CSV of every round, the table and the plot."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

_COLUMNS = ["seed", "strategy", "round", "n_labelled", "dice_wt", "dice_tc", "dice_et", "dice_mean"]


def write_csv(path: Path, results: list[Any]) -> None:
    """One row per seed, strategy and round, with per-domain Dice and the picked cases."""
    domains = sorted({d for r in results for d in r.domains})
    with open(path, "w", newline="", encoding="utf-8") as fp:
        w = csv.writer(fp)
        w.writerow([*_COLUMNS, *(f"dice_{d}" for d in domains), "seconds", "picked", "picked_domains"])
        for r in results:
            d = r.dice
            w.writerow(
                [
                    r.seed, r.strategy, r.round, r.n_labelled,
                    *(f"{d[k]:.4f}" for k in ("wt", "tc", "et", "mean")),
                    *(f"{r.domains[k]:.4f}" if k in r.domains else "" for k in domains),
                    r.seconds, ";".join(r.picked), ";".join(r.picked_domains),
                ]
            )  # fmt: skip


def _ci(pair: list[float] | None) -> str:
    return f"[{pair[0]:g}, {pair[1]:g}]" if pair else "-"


def write_table(path: Path, summary: dict[str, Any]) -> None:
    """Markdown table: labels to reach the target with CIs, fraction saved, final and per-domain Dice."""
    saved = summary["labels_saved"]["strategies"]
    doms = summary["curves_by_domain"]
    domain_names = sorted({d for s in doms.values() for d in s})
    head = ["strategy", "labels to 95 % of full pool (mean [95 % CI])", "fraction saved vs random [95 % CI]",
            "goal met", "final Dice", "minority picks", *(f"final {d}" for d in domain_names)]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, entry in saved.items():
        curve = summary["curves"][name]
        last = max(curve, key=int)
        censored = "" if all(entry["reached_per_seed"]) else " (some seeds never reached it)"
        frac = entry.get("fraction_saved")
        cells = [
            name,
            f"{entry['labels_needed_mean']:g} {_ci(entry['labels_needed_ci95'])}{censored}",
            "-" if frac is None else f"{frac:g} {_ci(entry.get('fraction_saved_ci95'))}",
            {True: "yes", False: "no"}.get(entry.get("goal_met"), "-"),
            f"{curve[last]['mean']:.3f} @ {last}",
            f"{summary['minority_pick_share'].get(name, 0):.2f}",
            *(f"{doms[name][d][last]:.3f}" if d in doms.get(name, {}) else "-" for d in domain_names),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def plot(path: Path, curves: dict[str, dict[int, tuple[float, float, int]]], summary: dict[str, Any]) -> None:
    """Left: mean +- sd Dice against labels, with the 95 %-of-full-pool target; right: minority-domain Dice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_dom) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, curve in curves.items():
        n = np.array(sorted(curve))
        mean, sd = np.array([curve[k][0] for k in n]), np.array([curve[k][1] for k in n])
        ax.plot(n, mean, marker="o", label=name)
        ax.fill_between(n, mean - sd, mean + sd, alpha=0.2)
        minority = _minority_curve(summary["curves_by_domain"].get(name, {}), summary["held_out_composition"])
        if minority:
            ax_dom.plot(sorted(minority), [minority[k] for k in sorted(minority)], marker="o", label=name)
    full = list(summary["labels_saved"]["full_pool_dice"].values())
    ax.axhline(0.95 * float(np.mean(full)), color="grey", linestyle="--", linewidth=0.8, label="95 % of full pool")
    seeds = max(c[2] for curve in curves.values() for c in curve.values())
    ax.set(xlabel="labelled cases", ylabel="held-out Dice (mean of WT, TC, ET)",
           title=f"Simulated active learning (mean ± sd, {seeds} seeds)")  # fmt: skip
    ax_dom.set(xlabel="labelled cases", ylabel="held-out Dice, minority domains", title="Minority scanners/contrasts")
    for a in (ax, ax_dom):
        a.legend(loc="lower right", fontsize=8)
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _minority_curve(by_domain: dict[str, dict[str, float]], held_out: dict[str, Any]) -> dict[int, float]:
    """Mean over the curves of the domains other than the archive's majority one."""
    from .al_pool import ARCHIVE

    minority = [d for d in sorted(held_out["domain"]) if d != ARCHIVE[0].name and d in by_domain]
    if not minority:
        return {}
    counts = sorted({int(n) for d in minority for n in by_domain[d]})
    return {n: float(np.mean([by_domain[d][str(n)] for d in minority if str(n) in by_domain[d]])) for n in counts}
