"""One colour language for every chart of the dashboard.

- A run's role keeps one colour on every page: the teacher blue, the student bluish green,
  the no-KD baseline vermillion (Okabe & Ito's colour-blind-safe palette). Several runs of
  one role (the Runs page) are shades of that role's colour.
- Each loss term keeps one colour on every chart, none of them a role's colour. A run's own
  total loss is drawn in its role's colour: the baseline's (plain CE) curve and the
  student's total read as those runs, beside the student's terms.
- Line style tells train (solid) from validation (dashed); nothing else uses dashes.
- NEUTRAL (a mid grey) is for what belongs to no run: reference lines, the Pareto front, the
  ring around the teacher in use. It reads on the light and the dark theme alike.

Terms that are drawn together (one method's terms with CE and the KD term) get colours far
apart in hue and lightness; a term this table does not know gets a fixed colour from
FALLBACK, chosen by a hash of its name (the same name, the same colour, in every process).
"""

from __future__ import annotations

import re
import zlib

# Legends sit under the plot, in the figure's own bottom margin (container coordinates): a
# legend in the plot's coordinates collided with the x-axis title, and one inside the plot
# covered the curves at 800 px. Figures with a legend keep LEGEND_MARGIN px at the bottom.
LEGEND_BELOW = dict(orientation="h", yref="container", yanchor="bottom", y=0.0, x=0, title_text="")
LEGEND_MARGIN = 96

# Heatmap cells: light scales under dark text, so the text reads in every cell and on both
# themes (plotly's automatic text colour picked dark text on mid-green cells). The upper half
# of cividis (made for colour-vision deficiency; grey to yellow, no run's colour) and the
# middle of RdBu (diverging).
SEQUENTIAL = ["#8A8678", "#A59C74", "#C3B369", "#E1CC55", "#FEE838"]
DIVERGING = ["#D6604D", "#F4A582", "#FDDBC7", "#F7F7F7", "#D1E5F0", "#92C5DE", "#4393C3"]
CELL_TEXT = "#111111"

# Okabe & Ito (2008)
ROLE = {"teacher": "#0072B2", "student": "#009E73", "baseline": "#D55E00"}
NEUTRAL = "#8C8C8C"
TRAIN_DASH, VALIDATION_DASH = "solid", "dash"

TERM = {
    "ce": "#E69F00",  # orange (Okabe-Ito)
    "kd": "#CC79A7",  # reddish purple (Okabe-Ito)
    "kd_std": "#AA3377",  # purple: KD on standardised logits
    "tckd": "#A15CE6",  # violet: DKD's target-class part
    "nckd": "#56B4E9",  # sky blue (Okabe-Ito): DKD's non-target part
    "dist_inter": "#33BBEE",  # cyan: DIST's inter-class relation
    "dist_intra": "#5C5CE6",  # blue-violet: DIST's intra-class relation
    "hint": "#DDCC77",  # sand: FitNets
    "at": "#88CCEE",  # pale cyan: attention transfer
    "sp": "#C317E6",  # vivid purple: similarity-preserving
    "rkd_d": "#77AADD",  # light blue: RKD distance
    "rkd_a": "#994455",  # wine: RKD angle
}
# Other spellings of the same terms (as the engine or a label may write them).
ALIASES = {
    "rkd_dist": "rkd_d",
    "rkd_distance": "rkd_d",
    "rkd_angle": "rkd_a",
    "inter": "dist_inter",
    "intra": "dist_intra",
    "fitnets": "hint",
    "soft": "kd",
    "hard": "ce",
}
# For terms the table does not name (from Paul Tol's schemes): none is a role's or a named term's.
FALLBACK = ["#EEDD88", "#FFAABB", "#99DDFF", "#44BB99", "#AAAA00", "#EE8866", "#BBCC33", "#6699CC"]


def term_key(name: str) -> str:
    """A term's name as the table spells it: 'RKD angle' -> 'rkd_a', 'DIST.INTER' -> 'dist_inter'."""
    key = re.sub(r"[\s.\-]+", "_", str(name).strip().lower())
    return ALIASES.get(key, key)


def term_color(name: str) -> str:
    """The colour of a loss term, the same on every chart; unknown terms get a fixed fallback."""
    key = term_key(name)
    if key in TERM:
        return TERM[key]
    return FALLBACK[zlib.crc32(key.encode()) % len(FALLBACK)]


def role_color(kind: str | None) -> str:
    """The colour of a run's role (teacher, student, baseline); NEUTRAL for anything else."""
    return ROLE.get(str(kind), NEUTRAL)


def _mix(color: str, other: str, t: float) -> str:
    a = [int(color[i : i + 2], 16) for i in (1, 3, 5)]
    b = [int(other[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(x + (y - x) * t):02X}" for x, y in zip(a, b))


def shades(kind: str | None, n: int) -> list[str]:
    """n shades of a role's colour, from darker to lighter (the role's own in the middle), for
    several runs of one role side by side; one run gets the role's colour itself."""
    base = role_color(kind)
    if n <= 1:
        return [base][:n]
    steps = [i / (n - 1) for i in range(n)]  # 0 … 1
    return [
        _mix(base, "#000000", 0.35 * (1 - 2 * s)) if s < 0.5 else _mix(base, "#FFFFFF", 0.55 * (2 * s - 1))
        for s in steps
    ]


def lighter(color: str, t: float = 0.45) -> str:
    """`color` mixed with white: a variant of a run (its int8 version) in the run's own hue."""
    return _mix(color, "#FFFFFF", t)


def role_of(label: str) -> str | None:
    """The role a job's run label starts with ('student', 'baseline 1a2b', 'teacher'), if any."""
    first = str(label).split(" ", 1)[0].lower()
    return first if first in ROLE else None


def scale(colours: list[str]) -> list[list]:
    """A plotly colorscale from evenly spaced colours."""
    return [[i / (len(colours) - 1), c] for i, c in enumerate(colours)]
