"""A sweep's runs as one table: load the members of a Hydra multirun (or any run directories
of ``evaluate.py``), find what varied between them, and aggregate their results.

    python -m rls.reports sweep outputs/sweeps/2026-01-01_00-00-00   # a Hydra sweep dir
    python -m rls.reports sweep runs/a runs/b --out some/dir         # or run directories

writes ``sweep.csv`` (every row of every run, with the member's varied values),
``sweep.json`` (members, the mean ± std table, the best method per column) and
``sweep_report.html`` into the sweep directory (``--out`` for run directories):
:func:`rls.reports.sweep_html.write_sweep`. This module knows nothing of HTML.

Methods are the rows; the columns are the values of whatever varied between members
(corruption, scale, a method setting...). A sweep directory lists its planned members
(``multirun.yaml``): members not run yet are ``missing``, members whose job raised are
``failed`` (with the error and whatever rows they recorded), the others ``done``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from rls.reports.run_files import COLUMNS, all_rows, summarize

# The configuration groups whose values change results (as evaluate.py's run hash): only
# these can make a column; trainer, logger, threads, run_dir... never do.
RESULT_GROUPS = ("generator", "flow", "prior", "method", "corruption", "data", "scale", "seed")
# The table's metrics and whether higher is better (the best per column is marked).
TABLE_METRICS = {
    "psnr": True,
    "ssim": True,
    "lpips": False,
    "lr_psnr": True,
    "flow_nll": False,
    "face_detected": True,  # dlib's face metrics (rls.metrics.faces), where measured
    "identity_distance": False,
}
RUN_DIR_FILE = "run_dir.txt"  # written into a Hydra job's output dir by the job
MEMBER_FILE = "member.json"  # written there when the job ends: status, error
SWEEP_FILES = ("sweep.csv", "sweep.json", "sweep_report.html")


@dataclass
class Member:
    """One configuration of the sweep: its run directory and what it set."""

    overrides: list[str]  # the Hydra overrides of the job ([] for a run directory given by hand)
    run_dir: Path | None  # None: never started
    status: str  # "done" | "failed" | "incomplete" (started, no end recorded) | "missing"
    error: str = ""
    tree: dict = field(default_factory=dict)  # the result-changing groups of config.yaml
    config: dict = field(default_factory=dict)  # the same, flattened ("corruption.name": ..)
    values: dict = field(default_factory=dict)  # varied key -> value (filled by load_sweep)
    column: str = ""  # the column label made of ``values``
    rows: list[dict] = field(default_factory=list)

    @property
    def label(self) -> str:
        if self.overrides:
            return " ".join(self.overrides)
        return self.run_dir.name if self.run_dir else "?"


@dataclass
class Sweep:
    """The members, what varied, and every results row tagged with its member's column.

    ``rows``: results.csv rows (strings, as written) plus ``column``, ``member`` (label),
    ``run_dir`` and one entry per varied key.
    """

    members: list[Member]
    varied: list[str]
    columns: list[str]
    methods: list[str]
    rows: list[dict]

    def cell(self, method: str, column: str) -> dict | None:
        """``summarize`` entry (count, ok, failed, metric -> {mean, std, n}) of one method
        in one column, or None when no member of that column recorded it."""
        mine = [r for r in self.rows if r["method"] == method and r["column"] == column]
        return summarize(mine)[method] if mine else None

    def column_status(self, column: str) -> str:
        """``done`` when every member of the column is done, else the worst status."""
        states = {m.status for m in self.members if m.column == column}
        for state in ("failed", "incomplete", "missing"):
            if state in states:
                return state
        return "done"

    def table(self) -> dict:
        """``{metric: {method: {column: {mean, std, n} | None}}}`` for :data:`TABLE_METRICS`."""
        cells = {(m, c): self.cell(m, c) for m in self.methods for c in self.columns}
        return {
            metric: {
                m: {c: (cells[m, c] or {}).get(metric) for c in self.columns} for m in self.methods
            }
            for metric in TABLE_METRICS
        }

    def best(self) -> dict:
        """``{metric: {column: method}}``: the best mean per column (higher or lower by
        :data:`TABLE_METRICS`); columns where nobody has the metric are left out."""
        out, table = {}, self.table()
        for metric, higher in TABLE_METRICS.items():
            out[metric] = {}
            for column in self.columns:
                scored = [
                    (stats["mean"], m)
                    for m, per_col in table[metric].items()
                    if (stats := per_col[column]) is not None and math.isfinite(stats["mean"])
                ]
                if scored:
                    out[metric][column] = (max if higher else min)(scored)[1]
        return out

    def to_json(self) -> dict:
        return {
            "varied": self.varied,
            "columns": self.columns,
            "methods": self.methods,
            "metrics": list(TABLE_METRICS),
            "members": [
                {
                    "column": m.column,
                    "values": m.values,
                    "overrides": m.overrides,
                    "run_dir": str(m.run_dir) if m.run_dir else None,
                    "status": m.status,
                    "error": m.error,
                    "rows": len(m.rows),
                }
                for m in self.members
            ],
            "table": self.table(),
            "best": self.best(),
        }


# ---------------------------------------------------------------------------------------
# finding members


def flatten(tree, prefix: str = "") -> dict:
    """``{"a.b.c": leaf}``; lists become their JSON text (compared as one value)."""
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(tree, list):
        return {prefix[:-1]: json.dumps(tree)}
    return {prefix[:-1]: tree}


def _read_config(run_dir: Path | None) -> dict:
    """The result-changing groups of a run's config.yaml ({} when there is none)."""
    if run_dir is None or not (run_dir / "config.yaml").exists():
        return {}
    tree = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=False)
    return {k: v for k, v in tree.items() if k in RESULT_GROUPS}


def planned_overrides(sweep_dir: Path) -> list[list[str]]:
    """Every job's overrides, in Hydra's order, from the sweep's ``multirun.yaml``
    (``hydra.sweeper.params`` and the command line, expanded as the basic sweeper does)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    path = sweep_dir / "multirun.yaml"
    if not path.exists():
        return []
    hydra_cfg = OmegaConf.to_container(OmegaConf.load(path).hydra, resolve=False)
    params = [f"{k}={v}" for k, v in (hydra_cfg["sweeper"].get("params") or {}).items()]
    parsed = OverridesParser.create().parse_overrides([*params, *hydra_cfg["overrides"]["task"]])
    batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return [list(job) for batch in batches for job in batch]


def _job_member(job_dir: Path) -> tuple[int | None, Member]:
    """A started Hydra job: its number, overrides, the run dir it noted, its end state."""
    hydra_dir = job_dir / ".hydra"
    overrides = list(OmegaConf.load(hydra_dir / "overrides.yaml"))
    num = None
    if (hydra_dir / "hydra.yaml").exists():
        num = OmegaConf.to_container(OmegaConf.load(hydra_dir / "hydra.yaml"))["hydra"]["job"].get(
            "num"
        )
    pointer = job_dir / RUN_DIR_FILE
    run_dir = Path(pointer.read_text().strip()) if pointer.exists() else None
    end = job_dir / MEMBER_FILE
    if end.exists():
        state = json.loads(end.read_text())
        status, error = state.get("status", "failed"), state.get("error", "")
    else:
        status, error = "incomplete", "the job did not record its end (still running or killed)"
    return num, Member(overrides, run_dir, status, error)


def sweep_members(sweep_dir: str | Path) -> list[Member]:
    """The members of a Hydra sweep directory: its planned jobs in order (``missing`` until
    a job directory with that job number exists), then any job the plan does not name."""
    sweep_dir = Path(sweep_dir)
    started = dict(
        _job_member(p.parent.parent) for p in sorted(sweep_dir.glob("*/.hydra/overrides.yaml"))
    )
    members = []
    for num, overrides in enumerate(planned_overrides(sweep_dir)):
        found = started.pop(num, None)
        members.append(found or Member(overrides, None, "missing", "not run (yet)"))
    return members + list(started.values())


def _run_dir_member(run_dir: Path) -> Member:
    if not run_dir.is_dir():
        return Member([], run_dir, "missing", f"{run_dir}: no such run directory")
    if not (run_dir / "results.csv").exists():
        return Member([], run_dir, "incomplete", f"{run_dir}: no results.csv (not finished)")
    return Member([], run_dir, "done")


def is_sweep_dir(path: Path) -> bool:
    return (path / "multirun.yaml").exists() or any(path.glob("*/.hydra/overrides.yaml"))


# ---------------------------------------------------------------------------------------
# columns


def _short(key: str, value) -> str:
    if key == "scale":
        return f"×{value}"
    if key in ("corruption.name", "generator.name", "data.name", "flow.family"):
        return str(value)
    return f"{key.removeprefix('method.')}={value}"


def varied_keys(configs: list[dict]) -> list[str]:
    """Config keys present in every config with more than one value. A group whose
    ``name`` varies is represented by its name alone; method display names are rows."""
    if len(configs) < 2:
        return []
    common = set.intersection(*(set(c) for c in configs))
    keys = [
        k
        for k in sorted(common)
        if len({json.dumps(c[k], sort_keys=True, default=str) for c in configs}) > 1
        and not (k.startswith("method.") and k.endswith(".name"))
    ]
    named = {k.rsplit(".", 1)[0] for k in keys if k.endswith(".name")}
    keys = [k for k in keys if k.endswith(".name") or k.split(".")[0] not in named]
    return sorted(keys, key=lambda k: (RESULT_GROUPS.index(k.split(".")[0]), k))


def _values_from_overrides(overrides: list[str]) -> dict:
    """``{key: value}`` of plain ``key=value`` overrides (group choices count as ``name``)."""
    out = {}
    for item in overrides:
        key, _, value = item.partition("=")
        key = key.lstrip("+~")
        if key.split(".")[0] in RESULT_GROUPS:
            out[key if "." in key or key in ("scale", "seed") else f"{key}.name"] = value
    return out


def load_sweep(sources: Iterable[str | Path]) -> Sweep:
    """The sweep made of ``sources``: Hydra sweep directories (their planned and started
    jobs) and/or run directories of evaluate.py. Reads each member's config.yaml and
    results (merged results.csv plus in-flight shards, so an interrupted member's rows
    count)."""
    members: list[Member] = []
    for source in map(Path, sources):
        members += sweep_members(source) if is_sweep_dir(source) else [_run_dir_member(source)]
    for m in members:
        m.tree = _read_config(m.run_dir)
        m.config = flatten(m.tree)
        m.rows = all_rows(m.run_dir) if m.run_dir and m.run_dir.is_dir() else []
    known = [m for m in members if m.config]
    said = [_values_from_overrides(m.overrides) for m in members]
    if len(known) >= 2:
        varied = varied_keys([m.config for m in known])
    else:  # too few members ran to compare configs: what the overrides vary
        varied = varied_keys(said)
    for m, told in zip(members, said):
        m.values = {k: m.config.get(k, told.get(k)) for k in varied}
        if varied and all(v is None for v in m.values.values()):
            m.column = m.label  # nothing known of it (e.g. a run directory that is not there)
        else:
            shown = m.values or {"": "all"}
            m.column = " · ".join(_short(k, v) if k else str(v) for k, v in shown.items())
    columns = list(dict.fromkeys(m.column for m in members))
    rows, methods = [], []
    for m in members:
        for row in m.rows:
            rows.append(
                {**row, "column": m.column, "member": m.label, "run_dir": str(m.run_dir),
                 **{k: m.values.get(k) for k in varied}}
            )  # fmt: skip
            if row["method"] not in methods:
                methods.append(row["method"])
    return Sweep(members, varied, columns, methods, rows)


# ---------------------------------------------------------------------------------------
# outputs


def sweep_csv(sweep: Sweep) -> str:
    """Every row of every member, with the member's column, varied values and status."""
    status = {m.label: m.status for m in sweep.members}
    head = ["column", *sweep.varied, *COLUMNS, "member", "member_status", "run_dir"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=head, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in sweep.rows:
        writer.writerow({**row, "member_status": status.get(row["member"], "")})
    return buffer.getvalue()
