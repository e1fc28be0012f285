"""Records, target checks and Markdown reports of the layer benchmarks."""

import json
import os

import numpy as np

from benchlib.cases import (
    MODES,
    TARGETS,
    baseline_name,
    frozen_mask,
    is_channel_conv,
    optimizer_state_bytes,
    variant_names,
)
from benchlib.environment import (
    backend_of,
    backend_title,
    onednn_text,
    setting_name,
    versions_text,
)
from benchlib.plot import plot
from benchlib.steps import jit_text
from benchlib.groups import FAST
from benchlib.timing import paired, paired_ratio
from channelconv.apps.report import parameter_counts


def summarize(size, mode, entries, plan):
    """One record per entry: medians, paired ratio to the baseline, state size."""
    baseline = entries[0]  # variants_for puts it first
    records = []
    for e in entries:
        times = np.array(e.times)
        matched, base = map(np.array, paired(e.times, baseline.times))
        batch = size.batch(mode)
        records.append(
            {
                "rank": plan.rank,
                "reduction": size.reduction,
                "in_channels": size.in_channels,
                "filters": size.filters,
                "batch": batch,
                "image": plan.image,
                "n_frozen": int(frozen_mask(size, plan).sum()),
                "mode": mode,
                "jit_compile": e.jit,
                "variant": e.variant.name,
                "baseline": baseline.variant.name,
                "rounds": len(times),
                "median_ms": 1e3 * float(np.median(times)),
                "q25_ms": 1e3 * float(np.percentile(times, 25)),
                "q75_ms": 1e3 * float(np.percentile(times, 75)),
                "ms_per_image": 1e3 * float(np.median(times)) / batch,
                "ratio": float(np.median(matched / base)),
                "ratio_of_medians": float(np.median(times) / np.median(baseline.times)),
                "ratio_of_minima": float(times.min() / min(baseline.times)),
                "extra_ms": 1e3 * float(np.median(matched - base)),
                "first_call_s": e.first_call_s,
                "traces": e.step.traces,  # None on PyTorch: nothing traced
                "times_ms": [round(1e3 * t, 4) for t in e.times],
                "trainable_params": parameter_counts(e.layer).trainable,
                "optimizer_state_bytes": int(optimizer_state_bytes(e.optimizer)),
            }
        )
    return records


def target_checks(records):
    """The fused/baseline ratio of every timed group against its target."""
    checks = []
    for r in records:
        if not is_channel_conv(r["variant"], "fused"):
            continue
        limit = TARGETS[(r["reduction"], r["mode"])]
        checks.append(
            {
                key: r[key]
                for key in (
                    "reduction", "in_channels", "filters", "batch", "mode",
                    "jit_compile", "ratio", "extra_ms",
                )
            }
            | {"target": limit, "met": r["ratio"] <= limit}
        )
    return checks


def per_channel_scaling(records):
    """How the per-channel path scales with input channels.

    For each (reduction, filters, mode, jit): its ratio to the fused path at
    each channel count, and the log-log slope of time per image against
    input channels for both (1.0 = linear in channels).
    """
    out = []
    def key(r):
        return r["reduction"], r["filters"], r["mode"], r["jit_compile"]

    for red, filters, mode, jit in sorted({key(r) for r in records}):
        rows = {
            (implementation, r["in_channels"]): r
            for r in records
            if key(r) == (red, filters, mode, jit)
            for implementation in ("fused", "per_channel")
            if is_channel_conv(r["variant"], implementation)
        }
        channels = sorted({c for _, c in rows})
        pc = [rows.get(("per_channel", c)) for c in channels]
        fu = [rows.get(("fused", c)) for c in channels]
        if None in pc or None in fu:
            continue
        item = {
            "reduction": red,
            "filters": filters,
            "mode": mode,
            "jit_compile": jit,
            "in_channels": channels,
            "per_channel_over_fused": [float(paired_ratio(p["times_ms"], f["times_ms"]))
                                       for p, f in zip(pc, fu)],
        }
        if len(channels) > 1:
            logc = np.log(channels)
            for name, rs in (("per_channel", pc), ("fused", fu)):
                item[f"slope_{name}"] = float(
                    np.polyfit(logc, np.log([r["ms_per_image"] for r in rs]), 1)[0]
                )
        out.append(item)
    return out


def fmt_ms(ms):
    return f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def table(header, rows, align):
    """A Markdown table; ``align`` holds one ``"l"`` or ``"r"`` per column."""
    rule = "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"
    return ["| " + " | ".join(header) + " |", rule] + [
        "| " + " | ".join(str(c) for c in row) + " |" for row in rows
    ]


def _jit(flag):
    return "jit" if flag else "-"


def rank_of(records):
    """The rank of a run's records (runs before 1-D and 3-D were 2-D)."""
    return records[0].get("rank", 2) if records else 2


def _variant_names(records, reduction):
    present = {r["variant"] for r in records if r["reduction"] == reduction}
    return [n for n in variant_names(reduction, rank_of(records)) if n in present]


def _shapes(records, reduction):
    return sorted({(r["in_channels"], r["filters"]) for r in records
                   if r["reduction"] == reduction}, key=lambda s: (s[1], s[0]))


def _timing_tables(records):
    lines = []
    for red in ("sum", "concat"):
        names = _variant_names(records, red)
        baseline = baseline_name(red, rank_of(records))
        for mode in MODES:
            rows = {(r["in_channels"], r["filters"], r["jit_compile"], r["variant"]): r
                    for r in records if (r["reduction"], r["mode"]) == (red, mode)}
            if not rows:
                continue
            body = []
            for c, f in _shapes(records, red):
                for jit in (False, True):
                    hits = [rows.get((c, f, jit, n)) for n in names]
                    if not any(hits):
                        continue
                    cells = [
                        "" if r is None else fmt_ms(r["median_ms"]) if n == baseline
                        else f"{fmt_ms(r['median_ms'])} ({r['ratio']:.2f}x)"
                        for n, r in zip(names, hits)
                    ]
                    batch = next(r["batch"] for r in hits if r)
                    body.append([c, f, batch, _jit(jit)] + cells)
            title = "training step" if mode == "train" else "inference"
            lines += ["", f"## {red}, {title}: ms per step (ratio to {baseline})", ""]
            lines += table(["in ch", "filters", "batch", "jit"] + names, body,
                            "rrrl" + "r" * len(names))
    return lines


def _target_tables(checks, rank):
    met = sum(c["met"] for c in checks)
    lines = [
        "",
        "## Targets: fused / baseline",
        "",
        f"{met} of {len(checks)} met. Each cell: the paired ratio and, in "
        "parentheses, the median extra time per step in ms; misses in bold. "
        "Targets: sum training 1.05, sum inference 1.03, concat 1.05.",
    ]
    for red in ("sum", "concat"):
        cells = {(c["in_channels"], c["filters"], c["mode"], c["jit_compile"]): c
                 for c in checks if c["reduction"] == red}
        if not cells:
            continue
        columns = [(m, j) for m in MODES for j in (False, True)
                   if any(k[2:] == (m, j) for k in cells)]
        body = []
        for c, f in sorted({k[:2] for k in cells}, key=lambda s: (s[1], s[0])):
            row = [c, f]
            for m, j in columns:
                check = cells.get((c, f, m, j))
                if check is None:
                    row.append("")
                    continue
                text = f"{check['ratio']:.3f}"
                row.append(f"{text if check['met'] else f'**{text}**'} "
                           f"({check['extra_ms']:+.2f})")
            body.append(row)
        header = ["in ch", "filters"] + [f"{m}{' jit' if j else ''}" for m, j in columns]
        lines += ["", f"{red} (baseline {baseline_name(red, rank)}):", ""]
        lines += table(header, body, "rr" + "r" * len(columns))
    return lines


def _state_tables(records):
    lines = [
        "",
        "## Optimizer state: Adam, bytes of per-parameter state",
        "",
        "Trainable parameters in parentheses. Adam keeps two float32 moments per "
        "trainable parameter: every entry below is exactly 8 bytes x parameters"
        + ("." if all(r["optimizer_state_bytes"] == 8 * r["trainable_params"]
                      for r in records) else " **except where it is not**."),
    ]
    for red in ("sum", "concat"):
        names = _variant_names(records, red)
        if not names:
            continue
        first = {(r["in_channels"], r["filters"], r["variant"]): r for r in reversed(records)
                 if r["reduction"] == red}
        body = []
        for c, f in _shapes(records, red):
            row = [c, f]
            for n in names:
                r = first.get((c, f, n))
                row.append("" if r is None else
                           f"{r['optimizer_state_bytes']} ({r['trainable_params']})")
            body.append(row)
        lines += [""] + table(["in ch", "filters"] + names, body, "rr" + "r" * len(names))
    return lines


def _scaling_table(scaling):
    body = []
    for s in scaling:
        ratios = ", ".join(f"{c}: {v:.1f}x" for c, v in
                           zip(s["in_channels"], s["per_channel_over_fused"]))
        body.append([s["reduction"], s["filters"], s["mode"], _jit(s["jit_compile"]), ratios,
                     f"{s.get('slope_per_channel', float('nan')):.2f}",
                     f"{s.get('slope_fused', float('nan')):.2f}"])
    return [
        "",
        "## Per-channel path: time relative to fused, by input channels",
        "",
        "Paired ratio per_channel / fused at each input-channel count; slope: "
        "exponent of time per image against input channels (log-log fit, 1 = linear).",
        "",
    ] + table(["reduction", "filters", "step", "jit", "per_channel / fused",
                "slope per_channel", "slope fused"], body, "lrllrrr")


def _assembly_table(assembly):
    if not assembly:
        return []
    body = [[a["in_channels"], a["filters"], a["kernel_elements"],
             f"{a['forward_ms']:.3f}", f"{a['forward_backward_ms']:.3f}"] for a in assembly]
    return [
        "",
        "## Kernel assembly alone (what the fused path adds), ms",
        "",
        "Median time of `layer.kernel` (forward) and of its gradient (forward + "
        "backward), minus the same on a plain variable of the full kernel's shape.",
        "",
    ] + table(["in ch", "filters", "kernel elements", "forward",
                "forward + backward"], body, "rrrrr")


def _first_call_table(records, at_least=2.0):
    body = [[r["reduction"], r["mode"], r["in_channels"], r["filters"], _jit(r["jit_compile"]),
             r["variant"], f"{r['first_call_s']:.1f}"]
            for r in records if r["first_call_s"] >= at_least]
    return [
        "",
        f"## First call (trace and compile) of {at_least:g} s or more",
        "",
    ] + table(["reduction", "step", "in ch", "filters", "jit", "variant", "s"], body,
               "llrrllr")


def markdown(result):
    """The results as Markdown: environment, timings, targets, state sizes, scaling."""
    env, plan, records = result["environment"], result["plan"], result["records"]
    retraced = [r for r in records if r["traces"] not in (1, None)]
    eager = all(r["traces"] is None for r in records)
    lines = [
        f"# ChannelConv{rank_of(records)}D benchmark{backend_title(env)}",
        "",
        f"- date: {env['date']}",
        f"- CPU: {env['cpu']}, {env['cores']} cores ({env['usable_cores']} usable)",
        f"- {versions_text(env)}, NumPy {env['numpy']}, Python {env['python']}",
        f"- {onednn_text(env)}",
        f"- load average (1, 5, 15 min) before: {result['load_before']}, "
        f"after: {result['load_after']}",
        f"- wall time: {result['wall_s'] / 60:.1f} min; mode: {result['mode']}",
        f"- images {plan['image']}x{plan['image']}, kernel {plan['kernel']}x{plan['kernel']}, "
        f"valid padding, {plan['frozen_fraction']:.0%} of kernels frozen; "
        f"after {plan['warmup']} warm-up steps, the median of {plan['min_rounds']} to "
        f"{plan['max_rounds']} interleaved rounds (all variants in the first "
        f"{plan['min_rounds']}, then only those at most {FAST}x their baseline; "
        "rounds per variant in the JSON)",
        f"- ratios are medians of per-round paired ratios; {jit_text(backend_of(env))}",
        "- " + ("every step ran eagerly (PyTorch): nothing traced" if eager else
                f"every timed function was traced once ({len(records)} functions)"
                if not retraced else
                f"**{len(retraced)} functions were traced more than once**"),
    ]
    if backend_of(env) != "tensorflow":
        lines.append("- `AnswerConv2D` (`channelconv.apps.reference`) is TensorFlow-only: not timed")
    elif not env.get("answer_layer", True):
        lines.append("- `channelconv.apps.reference.AnswerConv2D` was not importable: not timed")
    lines += _timing_tables(records)
    lines += _target_tables(result["targets"], rank_of(records))
    lines += _state_tables(records)
    lines += _scaling_table(result["per_channel_scaling"])
    lines += _assembly_table(result.get("assembly", []))
    lines += _first_call_table(records)
    return "\n".join(lines) + "\n"


def write_reports(result, out_dir, stem):
    """Derives targets and scaling from the records; writes JSON, Markdown, PNG."""
    result["targets"] = target_checks(result["records"])
    result["per_channel_scaling"] = per_channel_scaling(result["records"])
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, stem + ".json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(out_dir, stem + ".md"), "w") as f:
        f.write(markdown(result))
    plot(result, os.path.join(out_dir, stem + ".png"))


def write_setting_reports(result, out_dir, name, markdown_of):
    """Writes ``<name>_onednn-<on|off>.{json,md}``: one file pair per oneDNN setting.

    On JAX and PyTorch, ``<name>_jax`` / ``<name>_torch`` (see
    :func:`benchlib.environment.setting_name`).
    """
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f"{name}_{setting_name(result['environment'])}")
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(markdown_of(result))
    print(f"done in {result['wall_s'] / 60:.1f} min: {stem}.md")
