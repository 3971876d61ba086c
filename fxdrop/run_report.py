"""What ``fxdrop run`` prints and draws: the speed-ups of every arm against the full network, the table,
the warnings where the measures disagree, and the timeline figure (accuracy and forward FLOPs against
training time, drops and returns marked)."""

from __future__ import annotations

from .train import RunResult

__all__ = ["speedups", "disagrees", "table", "warnings_for", "plot", "TIMING_NOISE"]

# Two speed-ups of the same arm (by wall time and by CPU time) that differ by more than this fraction
# are reported as disagreeing. 11% is the largest spread seen on the 2-core reference machine between
# repeated runs that drop nothing (docs/results.md): a smaller gap is within what repeats already show,
# a larger one means something other than the arm's own work (another process, threads waiting) went
# into one of the two measures.
TIMING_NOISE = 0.11


def speedups(r: RunResult, base: RunResult) -> dict[str, float]:
    """Speed-ups of ``r`` over ``base``: predicted by forward FLOPs, measured by wall and by CPU time."""
    return {"flops": r.predicted_speedup(base), "wall": base.wall_s / max(r.wall_s, 1e-9),
            "cpu": base.cpu_s / max(r.cpu_s, 1e-9)}


def disagrees(s: dict[str, float]) -> bool:
    """Whether the wall-time and CPU-time speed-ups differ by more than :data:`TIMING_NOISE`."""
    return abs(s["wall"] / s["cpu"] - 1) > TIMING_NOISE


def table(results: list[RunResult]) -> str:
    from tabulate import tabulate

    base = results[0]
    seq = base.first_acc is not None
    rows = []
    for r in results:
        s = speedups(r, base)
        when = "; ".join(f"{st}:{len(n)}" for st, n in r.events) or "-"
        back = "; ".join(f"{st}:{len(n)}" for st, n in r.restores) or "-"
        first = [f"{100 * r.first_acc_at_switch:.2f}", f"{100 * r.first_acc:.2f}"] if seq else []
        rows.append([
            r.policy, r.steps, f"{r.wall_s:.1f}", f"{r.cpu_s:.1f}", f"{s['flops']:.2f}x", f"{s['wall']:.2f}x",
            f"{s['cpu']:.2f}x" + (" !" if disagrees(s) else ""), *first, f"{100 * r.test_acc:.2f}",
            f"{100 * (r.test_acc - base.test_acc):+.2f}", f"{100 * r.flops_ratio:.1f}%", f"{len(r.dropped)}/{r.units}",
            when, back,
        ])
    first_head = ["1st set acc % at switch", "1st set acc % at end"] if seq else []
    return tabulate(rows, headers=["policy", "steps", "wall s", "CPU s", "FLOPs speed-up", "wall speed-up",
                                   "CPU speed-up", *first_head, "test acc %", "Δ acc pt", "fwd FLOPs/step",
                                   "units dropped", "drops (step:count)", "returns"], disable_numparse=True)


def warnings_for(results: list[RunResult]) -> list[str]:
    base, out = results[0], []
    for r in results[1:]:
        s = speedups(r, base)
        if disagrees(s):
            out.append(f"warning: {r.policy}: wall-time speed-up {s['wall']:.2f}x and CPU-time speed-up "
                       f"{s['cpu']:.2f}x differ by more than {TIMING_NOISE:.0%} (the repeat noise on the "
                       "reference machine): something else used the CPU during some epochs, or threads waited; "
                       "no single figure is reported - rerun on an idle machine")
    return out


def plot(results: list[RunResult], path: str, title: str) -> None:
    """One report figure: test accuracy per epoch and forward FLOPs per step against training wall time,
    every arm, drops (dashed) and returns (dotted) marked and labelled with their units."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10})
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, gridspec_kw={"height_ratios": [1, 1.2]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, r in enumerate(results):
        c = colors[i % len(colors)]
        ax1.plot(r.epoch_time, [100 * a for a in r.epoch_acc], "o-", color=c,
                 label=f"{r.policy} ({r.steps} steps)")
        ax2.step([0.0] + r.step_time, [100 * r.step_flops[0]] + [100 * f for f in r.step_flops] if r.step_flops
                 else [100.0], where="pre", color=c, label=r.policy)
        for (st, names), t in zip(r.events, r.event_times):
            for ax in (ax1, ax2):
                ax.axvline(t, color=c, ls="--", lw=1, alpha=0.7)
            ax2.annotate(f"step {st}: {', '.join(names)}", (t, 100 * r.step_flops[min(st, len(r.step_flops)) - 1]),
                         textcoords="offset points", xytext=(4, -14), fontsize=9, color=c, rotation=0)
        for st, names in r.restores:  # units put back: dotted, labelled "back"
            t = r.step_time[min(st, len(r.step_time)) - 1] if r.step_time else 0.0
            for ax in (ax1, ax2):
                ax.axvline(t, color=c, ls=":", lw=1.5, alpha=0.9)
            ax2.annotate(f"step {st}: back {', '.join(names)}", (t, 100 * r.step_flops[min(st, len(r.step_flops)) - 1]),
                         textcoords="offset points", xytext=(4, 6), fontsize=9, color=c, rotation=0)
    ax1.set_ylabel("test accuracy (%)\nat each epoch end")
    ax1.legend(loc="lower right", fontsize=9)
    ax1.grid(alpha=0.3)
    ax2.set_ylabel("forward FLOPs per step\n(% of full network)")
    ax2.set_xlabel("training wall time of the arm (s; evaluation excluded, arms interleaved)")
    lo = min(min(r.step_flops, default=1.0) for r in results)
    ax2.set_ylim(max(0, 100 * lo - 15), 105)
    ax2.grid(alpha=0.3)
    ax2.legend(loc="lower left", fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
