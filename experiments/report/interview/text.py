"""Numbers, intervals and labels as the interview page writes them."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from ..suppression import Est


def esc(v) -> str:
    return html.escape(str(v))


def fmt_num(v: float) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v:+.1f}" if abs(v) >= 10 else f"{v:+.2f}" if abs(v) >= 1 else f"{v:+.3f}"


def fmt_ci(e: Est | None) -> str:
    return "-" if e is None else f"{fmt_num(e.value)} [{fmt_num(e.lo)}, {fmt_num(e.hi)}]"


def order(values: Sequence[str], known: Sequence[str]) -> list[str]:
    present = list(dict.fromkeys(values))
    return [v for v in known if v in present] + [v for v in present if v not in known]
