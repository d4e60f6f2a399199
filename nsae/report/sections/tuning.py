"""The report of a tuning sweep (experiment=nsae_tuning): the rule, the choice per condition
beside the untuned default, every candidate's KL (or, on a synthetic source, MCC) at matched
L0 against the learning rate (one curve per noise), and every candidate's numbers
(nsae/report/tuning.py decides)."""

from __future__ import annotations

from nsae.report import tuning
from nsae.report.document import Block, Collapsed, Heading, Table, Text
from nsae.report.groups import NORM_WORDS, SAE_WORDS
from nsae.report.plot_layout import CHOSEN, EXTRAPOLATED
from nsae.report.plots import panels
from nsae.report.runs import Run
from nsae.report.sections import Ctx, fmt, natural


def rule(obj: tuning.Objective) -> str:
    how = "log " if obj.log else ""
    mean = " (a geometric mean)" if obj.log else ""
    best = "lowest" if obj.lower else "highest"
    return (
        "**The rule** (fixed before the runs; nsae/report/tuning.py): per condition and "
        "layer, the reference L0 is the geometric mean of the L0s all of the condition's runs "
        f"reach. Each candidate's {how}{obj.name} is interpolated linearly in log L0 between "
        "its two sparsities at that reference, per layer and seed, and averaged: its "
        f"{obj.name} at matched L0{mean}. The choice is the {best} among the candidates "
        "whose L0s bracket the reference on every layer and seed (if none does: among those "
        "that bracket it most often). A choice at the edge of the grid, or beaten by a "
        "candidate that does not bracket (an extrapolated value), is named under caveats: "
        f"the best setting may lie there. {obj.name} is measured on the validation split, which "
        "neither training nor the studies' evaluation sees."
    )


def cond_words(cond: tuning.Cond) -> str:
    return f"{SAE_WORDS.get(cond[0], cond[0])}, {NORM_WORDS.get(cond[1], cond[1])}"


def build(runs: list[Run], ctx: Ctx) -> list[Block]:
    chosen = tuning.choose(runs)
    obj = tuning.objective(runs)
    at_l0 = f"{obj.name} at matched L0"
    base = tuning.untuned(runs)
    base_words = ", ".join(f"{k.split('.')[-1]} {v:g}" for k, v in base.items())
    conds = sorted(chosen, key=lambda c: (c[0] != "none", c[0], list(NORM_WORDS).index(c[1])))
    rows, every = [], []
    for cond in conds:
        cands = chosen[cond]
        best = next((c for c in cands if c.chosen), None)
        default = next((c for c in cands if c.is_default(base)), None)
        change = (
            f"{(best.value / default.value - 1) * 100:+.1f}%"
            if best and default and best.value and default.value
            else "n/a"
        )
        rows.append(
            [
                cond_words(cond),
                best.words() if best else "n/a",
                fmt(best.value if best else None),
                fmt(default.value if default else None),
                change,
                f"{best.bracketed}/{best.pairs}" if best else "n/a",
                str(len(cands)),
                "; ".join(tuning.caveats(best, cands)) if best else "",
            ]
        )
        for c in cands:
            every.append(
                [
                    cond_words(cond),
                    c.words(),
                    fmt(c.value),
                    f"{c.bracketed}/{c.pairs}",
                    "n/a" if (span := c.l0_span()) is None else f"{span[0]:.3g}-{span[1]:.3g}",
                    fmt(c.alive_min()),
                    "**chosen**" if c.chosen else "",
                ]
            )
    ctx.record["rule"] = tuning.__doc__
    ctx.record["choices"] = tuning.choices(chosen)
    ctx.record["candidates"] = [
        {
            "sae_type": c.cond[0],
            "normalization_method": c.cond[1],
            **{k.split(".")[-1]: v for k, v in zip(tuning.TUNED, c.setting, strict=True)},
            "objective": obj.metric,
            "at_matched_l0": c.value,
            "bracketed": c.bracketed,
            "pairs": c.pairs,
            "frac_alive_min": c.alive_min(),
            "chosen": c.chosen,
            "caveats": tuning.caveats(c, chosen[cond]) if c.chosen else [],
            "runs": sorted((r.rel for r in c.runs), key=natural),
        }
        for cond in conds
        for c in chosen[cond]
    ]
    figure = ctx.figure(
        "tuning",
        f"{at_l0} on the validation split{' (log)' if obj.log else ''} against the learning "
        "rate, one curve per training noise (the Normalized SAE), every candidate drawn, "
        "those whose L0s do not bracket the reference (not eligible: their "
        "values are extrapolated) crossed, and the choice ringed; "
        f"{'lower' if obj.lower else 'higher'} is better.",
        lambda path: panels(
            curves(chosen, conds), "learning rate", at_l0, path, logx=True, logy=obj.log
        ),
    )
    return [
        Heading("Tuning", 2, "tuning"),
        Text(rule(obj)),
        Table(
            [
                "condition",
                "chosen",
                at_l0,
                "untuned",
                "change",
                "bracketed",
                "candidates",
                "caveats",
            ],
            rows,
            anchor="tuning-choices",  # its caveats wrap (document.STYLE)
        ),
        Text(
            f"Untuned: {base_words}, what the study presets used before tuning. The chosen "
            "values are the study presets' per-condition defaults (conf/tuned/); a "
            "condition's choice applies to its coeff=beta cell too."
        ),
        *figure,
        Collapsed(
            "Every candidate",
            [
                Table(
                    [
                        "condition",
                        "setting",
                        at_l0,
                        "bracketed",
                        "L0 range",
                        "least alive fraction",
                        "",
                    ],
                    every,
                )
            ],
        ),
    ]


def curves(chosen: dict[tuning.Cond, list[tuning.Candidate]], conds: list[tuning.Cond]) -> dict:
    """{condition: {noise series: (lrs, KLs)}} for `panels`, and two overlays drawn on top:
    the chosen candidate (CHOSEN, a ring) and the candidates whose value is extrapolated on
    some seed or layer (EXTRAPOLATED, crosses: not eligible)."""
    data: dict[str, dict] = {}
    for cond in conds:
        series: dict[str, tuple[list[float], list[float]]] = {}
        pick: tuple[list[float], list[float]] | None = None
        out: tuple[list[float], list[float]] = ([], [])
        for c in chosen[cond]:
            lr, noise = c.setting[0], c.setting[1]
            if lr is None or c.value is None:
                continue
            name = "no noise (standard SAE)" if noise is None else f"noise {noise:g}"
            xs, ys = series.setdefault(name, ([], []))
            xs.append(lr)
            ys.append(c.value)
            if c.chosen:
                pick = ([lr], [c.value])
            if not c.eligible:
                out[0].append(lr)
                out[1].append(c.value)
        if out[0]:
            series[EXTRAPOLATED] = out
        if pick:
            series[CHOSEN] = pick
        data[cond_words(cond)] = series
    return data
