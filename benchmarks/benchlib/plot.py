"""The step-time plot of the layer benchmarks."""

from benchlib.cases import variant_names
from benchlib.environment import backend_label


PLOT_KEYS = ("reduction", "mode", "filters", "variant", "jit_compile")


def plot(result, path):
    """Time per image against input channels, one line per variant and jit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    records = result["records"]
    rank = records[0].get("rank", 2) if records else 2  # 2-D before ranks were recorded
    panels = sorted({(r["reduction"], r["mode"], r["filters"]) for r in records},
                    key=lambda p: (p[0] != "sum", p[1] != "train", p[2]))
    reductions = [r for r in ("sum", "concat") if any(p[0] == r for p in panels)]
    columns = sorted({(p[1], p[2]) for p in panels}, key=lambda c: (c[0] != "train", c[1]))
    fig, axes = plt.subplots(len(reductions), len(columns), squeeze=False,
                             figsize=(3.6 * len(columns) + 2.6, 3.4 * len(reductions)))
    channels = sorted({r["in_channels"] for r in records})
    colors = {}
    for i, red in enumerate(reductions):
        for j, (mode, filters) in enumerate(columns):
            ax = axes[i][j]
            names = variant_names(red, rank)
            for name in names:
                for jit in (False, True):
                    where = (red, mode, filters, name, jit)
                    pts = sorted(
                        (r["in_channels"], r["ms_per_image"])
                        for r in records
                        if tuple(r[k] for k in PLOT_KEYS) == where
                    )
                    if not pts:
                        continue
                    color = colors.setdefault(name, f"C{len(colors)}")
                    xs, ys = zip(*pts)
                    # the baseline drawn wide and pale, so that a variant on it shows
                    style = (dict(linewidth=5, alpha=0.4, zorder=1)
                             if name == names[0] else dict(linewidth=1.5, zorder=2))
                    ax.plot(xs, ys, marker="o" if len(xs) > 1 else "s", color=color,
                            linestyle="--" if jit else "-",
                            label=f"{name}{' (jit)' if jit else ''}", **style)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(channels, [str(c) for c in channels])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(NullFormatter())
            step = "training" if mode == "train" else "inference"
            ax.set_title(f"{red}, {step}, {filters} filters", fontsize=9)
            ax.set_xlabel("input channels")
            ax.set_ylabel("ms per image")
            ax.grid(True, which="both", alpha=0.3)
        handles, labels = axes[i][0].get_legend_handles_labels()
        axes[i][-1].legend(handles, labels, fontsize=7, loc="upper left",
                           bbox_to_anchor=(1.02, 1.0), title="solid: no jit; dashed: jit",
                           title_fontsize=7)
    env = result["environment"]
    fig.suptitle(f"ChannelConv{rank}D step time ({env['cpu']}, {env['cores']} cores, "
                 f"{backend_label(env)}, Keras {env['keras']}, {env['date'][:10]})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
