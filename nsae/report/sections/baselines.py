"""Today's baselines (experiment=nsae_baselines): the Normalized SAE against each SAE that
practitioners train today, at matched L0, one scope per arm: decoder-norm L1, expected-norm
rescaling, JumpReLU, TopK, BatchTopK (any arm that is neither the plain standard SAE nor a
Normalized SAE). Two questions, under the rules of the claims they extend:
- `baselines_on_par`: reconstruction score and KL, claim 5's non-inferiority rule;
- `baselines_shrinkage`: |1 − FS| and |1 − RRB|, claim 1's sign test.
The write-up compared against the plain standard SAE only (the Claims section), so these are
not its claims; their verdicts are counted all the same, as the question the baselines study
asks. Rendered only for a section holding such an arm beside the Normalized SAE."""

from __future__ import annotations

from collections.abc import Callable

from nsae.report import verdicts
from nsae.report.document import Block, Heading, Text
from nsae.report.groups import Condition, Section, label
from nsae.report.judge import Judgement, judgement, pairs
from nsae.report.sections import Ctx
from nsae.report.sections.claim_blocks import Claim, claim_blocks
from nsae.report.sections.claims import MATCHED
from nsae.report.sections.claims_compare import par_rows, shrinkage_rows


def is_baseline(c: Condition) -> bool:
    """An arm of today's baselines: neither the plain standard SAE nor a Normalized SAE."""
    return c[0] != "none" and c[0].split("+")[0] != "normalized_sae"


def baseline_pairs(section: Section) -> list[tuple[Condition, Condition]]:
    """(Normalized SAE, a baseline arm) with the same loss and coefficient mode."""
    return pairs(section, lambda c: c[0] == "normalized_sae", is_baseline, lambda c: c[1:3])


def per_arm(rows: Callable[[Section, Condition, Condition], list[dict]]) -> Callable:
    """A claim's judge: one judgement per baseline arm, over rows(section, x, y)."""

    def judge(section: Section) -> list[Judgement]:
        return [
            judgement(f"{label(x)} vs {label(y)}", rows(section, x, y))
            for x, y in baseline_pairs(section)
        ]

    return judge


CLAIMS = (
    Claim(
        "baselines_on_par",
        "Not the write-up's claim (it compared with the plain standard SAE only): at matched "
        "L0 the Normalized SAE reconstructs on par with each SAE in use today.",
        "Claim 5's rule: the improvement of x over y (x − y for the reconstruction score, "
        f"y − x for KL) has a CI above −{verdicts.PAR_MARGIN:.0%} of y; better if that CI "
        "lies wholly above 0; worse arms are contradicted. " + MATCHED,
        per_arm(par_rows),
        [],
        "reconstruction on par with today's SAEs",
        short_rule=f"non-inferiority: the improvement's CI above −{verdicts.PAR_MARGIN:.0%} "
        "of y; better if wholly above 0.",
        per_scope=True,
    ),
    Claim(
        "baselines_shrinkage",
        "Not the write-up's claim: at matched L0 the Normalized SAE's reconstructions are "
        "less shrunk than each SAE's in use today.",
        "Claim 1's rule: x − y of |1 − FS| and of |1 − RRB| both have a CI below 0 (sign "
        "test); where the two measures disagree the comparison is inconclusive. " + MATCHED,
        per_arm(shrinkage_rows),
        [],
        "less shrinkage than today's SAEs",
        short_rule="x − y of |1 − FS| and of |1 − RRB| both with a CI below 0 (sign test).",
        per_scope=True,
    ),
)


def build(section: Section, ctx: Ctx) -> list[Block]:
    """The "Against today's baselines" part: [] unless the section has a baseline arm and
    a Normalized SAE to set against it."""
    if not baseline_pairs(section):
        return []
    return [
        Heading("Against today's baselines", 3, f"{ctx.prefix}baselines"),
        Text(
            "The Normalized SAE against each other SAE of the sweep at matched L0, one scope "
            "per arm (the figures are the Claims section's Pareto frontiers)."
        ),
        *claim_blocks(CLAIMS, section, ctx, "baselines"),
    ]
