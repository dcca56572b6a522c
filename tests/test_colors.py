"""The colour language (ui/colors.py): one colour per role and per loss term, none shared;
colours drawn together stay apart for normal vision and for the two common colour-vision
deficiencies (simulated here with Viénot, Brettel & Mollon 1999, in float64)."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest

from ui import colors

# What one chart draws together: a method's terms with CE, the student's total (its role
# colour) and, in a mix, the KD term.
DRAWN_TOGETHER = [
    ["ce", "kd"],
    ["ce", "kd_std"],
    ["ce", "tckd", "nckd"],
    ["ce", "dist_inter", "dist_intra"],
    ["ce", "kd", "hint"],
    ["ce", "kd", "at"],
    ["ce", "kd", "sp"],
    ["ce", "kd", "rkd_d", "rkd_a"],
]
MIN_DELTA_E = 12.0  # CIE76; about where two thin lines stop being confused at a glance


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def hex_rgb(h: str) -> np.ndarray:
    return np.array([int(h[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.float64) / 255.0


def lab(rgb_linear: np.ndarray) -> np.ndarray:
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = m @ rgb_linear / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


# Viénot et al. (1999) dichromat simulation matrices, in linear RGB.
PROTAN = np.array([[0.11238, 0.88762, 0.0], [0.11238, 0.88762, 0.0], [0.00401, -0.00401, 1.0]])
DEUTAN = np.array([[0.29275, 0.70725, 0.0], [0.29275, 0.70725, 0.0], [-0.02234, 0.02234, 1.0]])


def seen(h: str, vision: str) -> np.ndarray:
    rgb = srgb_to_linear(hex_rgb(h))
    if vision != "normal":
        rgb = np.clip({"protan": PROTAN, "deutan": DEUTAN}[vision] @ rgb, 0, 1)
    return lab(rgb)


def delta_e(a: str, b: str, vision: str) -> float:
    return float(np.linalg.norm(seen(a, vision) - seen(b, vision)))


def test_every_role_and_term_has_its_own_colour():
    everything = [*colors.ROLE.values(), colors.NEUTRAL, *colors.TERM.values(), *colors.FALLBACK]
    assert len(set(everything)) == len(everything)


@pytest.mark.parametrize("vision", ["normal", "protan", "deutan"])
@pytest.mark.parametrize("terms", DRAWN_TOGETHER, ids=lambda t: "+".join(t))
def test_colours_drawn_together_stay_apart(terms, vision):
    drawn = {t: colors.term_color(t) for t in terms} | {
        "student total": colors.role_color("student"),
        "baseline": colors.role_color("baseline"),
    }
    for (a, ca), (b, cb) in itertools.combinations(drawn.items(), 2):
        assert delta_e(ca, cb, vision) >= MIN_DELTA_E, f"{a} {ca} vs {b} {cb} ({vision})"


@pytest.mark.parametrize("vision", ["normal", "protan", "deutan"])
def test_the_three_roles_stay_apart(vision):
    for a, b in itertools.combinations(colors.ROLE.values(), 2):
        assert delta_e(a, b, vision) >= MIN_DELTA_E


@pytest.mark.parametrize(
    "name, key",
    [
        ("CE", "ce"),
        ("RKD angle", "rkd_a"),
        ("RKD dist", "rkd_d"),
        ("rkd_dist", "rkd_d"),
        ("INTER", "dist_inter"),
        ("INTRA", "dist_intra"),
        ("DIST.INTER", "dist_inter"),
        ("KD std", "kd_std"),
        ("HINT", "hint"),
        ("TCKD", "tckd"),
    ],
)
def test_term_spellings_map_to_one_colour(name, key):
    assert colors.term_key(name) == key
    assert colors.term_color(name) == colors.TERM[key]


def test_an_unknown_term_gets_the_same_fallback_colour_in_every_process():
    here = colors.term_color("my_new_term")
    assert here in colors.FALLBACK and here not in colors.ROLE.values()
    code = "from ui import colors; print(colors.term_color('my_new_term'))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONHASHSEED": "123"})
    assert other.stdout.strip() == here, other.stderr


def test_shades_of_a_role_run_from_dark_to_light_around_its_colour():
    assert colors.shades("student", 1) == [colors.ROLE["student"]]
    five = colors.shades("student", 5)
    assert five[2] == colors.ROLE["student"] and len(set(five)) == 5
    light = [seen(c, "normal")[0] for c in five]
    assert light == sorted(light)
    assert colors.role_color("sweep") == colors.NEUTRAL


def relative_luminance(h: str) -> float:
    r, g, b = srgb_to_linear(hex_rgb(h))
    return float(0.2126 * r + 0.7152 * g + 0.0722 * b)


@pytest.mark.parametrize("scale", ["SEQUENTIAL", "DIVERGING"])
def test_heatmap_text_reads_on_every_cell_colour(scale):
    """WCAG 2 contrast of the cells' text against every stop of the scale: at least 4.5:1."""
    text = relative_luminance(colors.CELL_TEXT)
    for stop in getattr(colors, scale):
        cell = relative_luminance(stop)
        assert (max(cell, text) + 0.05) / (min(cell, text) + 0.05) >= 4.5, stop
