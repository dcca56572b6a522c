"""Number formatting shared by the dashboard, the CLI and the model cards.

Why: accuracies pass through float32, so a gain that is really nothing comes out
as -2.4e-08, and `f"{x:+.4f}"` prints it as "-0.0000" (red in a metric card).
`num` prints a value that rounds to zero without a minus sign; `rounded` does the
same for numbers that are formatted later, e.g. a table column with a printf
format that the browser applies.

No torch and no pandas: pure Python, so every layer may use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

Number = int | float


def rounded(value: Number | None, digits: int = 4) -> float | None:
    """`value` rounded to `digits` decimals, never negative zero (None and NaN pass through)."""
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        return value
    return round(value, digits) + 0.0  # -0.0 + 0.0 is +0.0


def rounded_all(values: Iterable[Number | None], digits: int = 4) -> list[float | None]:
    """`rounded` over a sequence (a pandas column goes in, a list comes out)."""
    return [rounded(v, digits) for v in values]


def num(value: Number | None, digits: int = 4, sign: bool = False, missing: str = "—") -> str:
    """`value` with `digits` decimals ("+" in front of non-negative values if `sign`);
    a value that rounds to zero prints as 0.0000 / +0.0000, never -0.0000.
    None and NaN print as `missing`."""
    if value is None or math.isnan(float(value)):
        return missing
    spec = f"{'+' if sign else ''}.{digits}f"
    return format(rounded(value, digits), spec)


def signed(value: Number | None, digits: int = 4, missing: str = "—") -> str:
    """A gain or a difference: always signed, "+0.0000" for one that rounds to zero."""
    return num(value, digits, sign=True, missing=missing)
