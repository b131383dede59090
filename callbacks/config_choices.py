"""Config-group choices checked before Hydra composes anything, so a misspelt method or
corruption (``method=[rls,rsl]``, ``-m corruption=none,jepg``) is refused at once with
the valid names, before any member of a sweep runs. (Hydra lists the options of a plain
``group=name`` itself, but not of an item in a list such as ``method=[...]``.)
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser


def group_options(config_dir: Path, group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml"))


def check_group_choices(argv: list[str], config_dir: str | Path) -> None:
    """Raise ``SystemExit`` naming the override, the unknown name and the valid ones when
    a command-line choice of a config group (``method``, ``corruption``, ...) has no file."""
    config_dir = Path(config_dir)
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # a malformed override: Hydra itself says what is wrong with it
        return
    for override in parsed:
        key = override.key_or_group
        if override.package is not None or not (config_dir / key).is_dir():
            continue
        if override.is_delete():
            continue
        names = [str(v) for v in _choices(override)]
        known = group_options(config_dir, key)
        unknown = [n for n in names if n not in known and n != "null"]
        if unknown:
            raise SystemExit(
                f"unknown {key} {', '.join(repr(n) for n in unknown)} in "
                f"'{override.input_line}'; the {key} choices (configs/{key}/) are: "
                f"{', '.join(known)}"
            )


def _choices(override) -> list:
    """The plain values of an override: each sweep choice, each list item."""
    values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
    out = []
    for value in values:
        out += list(value) if isinstance(value, list | tuple) else [value]
    return out
