"""The benchmark's table: one row per figure, with its target and whether it was met.

A target is ``ratio<=X`` / ``ratio>=X`` (ours / the seed's, same run), ``abs<=X`` /
``abs>=X`` (ours alone), or ``base<=X`` / ``base>=X``: ours against a figure of ours from
the same run (its ``base``, named by ``base_name``): the same reads on small tables, one
worker process instead of two, the middle third of a run.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field

from system import SEED, Ours


@dataclass
class Row:
    """One line of the table: a workload, a metric, both figures, the target."""

    key: str
    workload: str
    metric: str
    seed: float | None
    ours: float | None
    target: str
    #: For a ``base`` target: the figure ours is judged against, and what it is.
    base: float | None = None
    base_name: str = ""
    #: False: a workload the seed design is not run on at all (its column shows "-").
    seed_applies: bool = True

    @property
    def ratio(self) -> float | None:
        if self.seed is None or self.ours is None or self.seed == 0:
            return None
        return self.ours / self.seed

    @property
    def base_ratio(self) -> float | None:
        if self.base is None or self.ours is None or self.base == 0:
            return None
        return self.ours / self.base

    @property
    def met(self) -> bool | None:
        match = re.fullmatch(r"(ratio|abs|base)(<=|>=)([\d.]+)", self.target)
        if not match:
            return None
        kind, op, bound_s = match.groups()
        if kind == "ratio" and self.seed is None:
            return None  # no seed design in this run: nothing to compare with
        value = {"ratio": self.ratio, "abs": self.ours, "base": self.base_ratio}[kind]
        if value is None:
            return False
        bound = float(bound_s)
        return value >= bound if op == ">=" else value <= bound

    def target_text(self) -> str:
        if self.target.startswith("base"):
            bound = self.target[4:].replace("<=", "<= ").replace(">=", ">= ")
            return f"ours {bound}x {self.base_name} ({fmt(self.base)})"
        return self.target.replace("ratio", "ours/seed ").replace("abs", "ours ")

    def met_text(self) -> str:
        met = {True: "yes", False: "**no**", None: ""}[self.met]
        if self.target.startswith("base") and self.base_ratio is not None:
            met += f" ({self.base_ratio:.2f}x)"
        return met


@dataclass
class Bench:
    args: argparse.Namespace
    ours: Ours
    rows: list[Row] = field(default_factory=list)
    raw: dict[str, object] = field(default_factory=dict)
    #: Lines printed under the table (what a figure does not say by itself).
    notes: list[str] = field(default_factory=list)

    @property
    def seed(self) -> str | None:
        """The seed design's URL, when it runs beside ours."""
        return SEED if self.args.seed else None

    def add(self, *row_args: object, **row_kwargs: object) -> None:
        row = Row(*row_args, **row_kwargs)  # type: ignore[arg-type]
        self.rows.append(row)
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        base = f", {row.met_text()} vs {row.base_name}" if row.target.startswith("base") else ""
        print(
            f"  {row.key} {row.workload[:48]} | {row.metric}: seed {fmt(row.seed)}, "
            f"ours {fmt(row.ours)} ({ratio}{base})",
            flush=True,
        )


def fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.1f}" if value >= 10 else f"{value:,.2f}"


def table(b: Bench) -> str:
    lines = [
        "| # | workload | metric | seed | ours | ours/seed | target | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in b.rows:
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "-"
        seed = fmt(r.seed) if r.seed_applies else "-"
        lines.append(
            f"| {r.key} | {r.workload} | {r.metric} | {seed} | {fmt(r.ours)} "
            f"| {ratio} | {r.target_text()} | {r.met_text()} |"
        )
    return "\n".join(lines)
