"""YAML configs with every error at once: reading (with line numbers), ``extends`` chains, ``key.path=value``
overrides, and pydantic errors turned into ``file:line: key.path: message`` lines.

Generic on purpose: the curriculum, the data mixes and the sweeps each keep their own schema and use this for the
rest, so the three report errors the same way. A list keyed by a field (a curriculum's ``stages`` by ``name``)
merges and is addressed by that key; other lists are replaced.
"""

from __future__ import annotations

import copy
import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import yaml
from pydantic import ValidationError

from spinegpt.errors import UserError

Loc = Sequence[str | int]
Node = yaml.Node | None

MAX_BYTES = 1 << 20
"""The largest config file read (the paper's curriculum is 4 KiB)."""
MAX_VALUES = 100_000
"""The most values a config may hold once its aliases are expanded: a few lines of nested aliases can stand for
billions of values, which every later step (validation, merging, hashing) would expand."""
MAX_DEPTH = 64
"""The deepest nesting of lists and mappings accepted."""


@dataclass(frozen=True)
class ConfigIssue:
    path: str
    message: str
    file: Path | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: " if self.file and self.line else (f"{self.file}: " if self.file else "")
        return f"{where}{self.path or '<root>'}: {self.message}"


class ConfigError(UserError, ValueError):
    """Every problem found in one config, each with its key path (and file:line where the key is in a file)."""

    exit_code = 2
    kind = "config"

    def __init__(self, source: Path | str, issues: Sequence[ConfigIssue]):
        self.source = source
        self.issues = list(issues)
        lines = "\n".join(f"  - {issue}" for issue in self.issues)
        super().__init__(f"{self.heading()}: {len(self.issues)} error(s) in {self.kind}\n{lines}")

    def heading(self) -> str:
        return str(self.source)


# -- reading -----------------------------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys without a word; a config whose second ``learning_rate`` silently
    wins is a bug waiting to happen, so a repeated key is an error here."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key]})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: Path, error: Callable[[Path, list[ConfigIssue]], ConfigError]) -> tuple[dict[str, Any], Node]:
    """A YAML mapping and its node tree (for line numbers); anything else raises ``error(path, issues)``.

    Bounded in everything a small file could make expensive: only a regular file (a device or FIFO never ends), at
    most ``MAX_BYTES``, ``MAX_DEPTH`` levels deep and ``MAX_VALUES`` values with aliases expanded."""

    def fail(message: str, line: int | None = None) -> ConfigError:
        return error(path, [ConfigIssue("", message, path, line)])

    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise fail("not a regular file (a folder, device or FIFO): a config is a YAML file")
        if info.st_size > MAX_BYTES:
            raise fail(f"{info.st_size / 2**20:.1f} MiB, larger than the {MAX_BYTES >> 20} MiB a config may be")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise fail(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_size(node, fail)
        doc = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise fail(f"invalid YAML: {problem}", line) from None
    except RecursionError:
        raise fail(f"nested too deeply (more than {MAX_DEPTH} levels)") from None
    finally:
        loader.dispose()
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise fail("must be a mapping of keys", 1)
    return doc, node


def _check_size(root: yaml.Node, fail: Callable[[str, int | None], ConfigError]) -> None:
    """Refuse a node tree deeper than MAX_DEPTH or larger than MAX_VALUES with its aliases expanded. PyYAML shares
    an aliased node, so counting with a memo per node costs the file's size, not the expansion's; the memo keeps
    each node's height too, because an alias can reach a shallow anchor from deep inside another."""
    memo: dict[int, tuple[int, int]] = {}  # id(node) -> (values, height) with aliases expanded
    open_nodes: set[int] = set()

    def too_deep(node: yaml.Node) -> ConfigError:
        return fail(f"nested too deeply (more than {MAX_DEPTH} levels)", node.start_mark.line + 1)

    def measure(node: yaml.Node, depth: int) -> tuple[int, int]:
        if depth > MAX_DEPTH:
            raise too_deep(node)
        key = id(node)
        if key in memo:
            total, height = memo[key]
            if depth + height - 1 > MAX_DEPTH:  # its deepest value, as the first visit would have seen it
                raise too_deep(node)
            return total, height
        if key in open_nodes:
            raise fail("an alias refers to the value that holds it", node.start_mark.line + 1)
        open_nodes.add(key)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        measured = [measure(child, depth + 1) for child in children]
        open_nodes.discard(key)
        memo[key] = total, height = 1 + sum(m[0] for m in measured), 1 + max((m[1] for m in measured), default=0)
        return total, height

    if (total := measure(root, 0)[0]) > MAX_VALUES:
        raise fail(
            f"its aliases expand to {total:,} values, more than the {MAX_VALUES:,} a config may hold (an alias bomb?)",
            None,
        )


# -- locating and wording errors -----------------------------------------------------------------------------------


def format_path(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) else str(value)


def error_message(error: Mapping[str, Any]) -> str:
    """A pydantic error in the words of a config file (``must be > 0``, ``unknown key``)."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required"
    if kind == "greater_than":
        return f"must be > {_num(ctx['gt'])}"
    if kind == "greater_than_equal":
        return f"must be >= {_num(ctx['ge'])}"
    if kind == "less_than":
        return f"must be < {_num(ctx['lt'])}"
    if kind == "too_short":
        return "must not be empty"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return str(error["msg"])


def line_of(node: Node, loc: Loc) -> tuple[int | None, bool]:
    """1-based line of the deepest node along ``loc`` in a YAML node tree, and whether all of ``loc`` was found."""
    line = None
    for depth, part in enumerate(loc):
        nxt = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == part:
                    line, nxt = key.start_mark.line + 1, value
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            nxt = node.value[part]
            line = nxt.start_mark.line + 1
        if nxt is None:
            return line, depth == len(loc)
        node = nxt
    return line, True


def error_loc(error: Mapping[str, Any]) -> list[str | int]:
    """A pydantic error's location without the validator-function parts pydantic inserts."""
    return [p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-"))]


def validation_issues(
    exc: ValidationError, locate: Callable[[list[str | int]], tuple[Path | None, int | None]]
) -> list[ConfigIssue]:
    """One issue per pydantic error, placed by ``locate(loc) -> (file, line)``."""
    issues = []
    for error in exc.errors():
        loc = error_loc(error)
        file, line = locate(loc)
        issues.append(ConfigIssue(format_path(loc), error_message(error), file, line))
    return issues


# -- extends and overrides -----------------------------------------------------------------------------------------


def merge(base: Any, over: Any, keyed: Mapping[str, str], issues: list[ConfigIssue], file: Path, path: str = "") -> Any:
    """Deep-merge ``over`` onto ``base``. A top-level list named in ``keyed`` merges item by item on that field
    (``{"stages": "name"}``); every other list is replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            sub = f"{path}.{key}" if path else str(key)
            if not path and key in keyed and isinstance(value, list) and isinstance(base.get(key), list):
                out[key] = _merge_keyed(base[key], value, str(key), keyed[key], keyed, issues, file)
            else:
                out[key] = merge(base.get(key), value, keyed, issues, file, sub) if key in base else value
        return out
    return copy.deepcopy(over)


def _merge_keyed(
    base: list[Any],
    over: list[Any],
    name: str,
    field: str,
    keyed: Mapping[str, str],
    issues: list[ConfigIssue],
    file: Path,
) -> list[Any]:
    merged = [copy.deepcopy(item) for item in base]
    keys = [item.get(field) if isinstance(item, dict) else None for item in merged]
    seen: set[Any] = set()
    for i, item in enumerate(over):
        key = item.get(field) if isinstance(item, dict) else None
        if key in seen:
            issues.append(ConfigIssue(f"{name}[{i}].{field}", f"{key!r} appears twice", file))
            continue
        seen.add(key)
        if key not in keys:
            issues.append(
                ConfigIssue(f"{name}[{i}].{field}", f"{key!r} is not one of the extended config's {keys}", file)
            )
            continue
        j = keys.index(key)
        merged[j] = merge(merged[j], item, keyed, issues, file, f"{name}[{j}]")
    return merged


def resolve_extends(
    path: Path,
    keyed: Mapping[str, str],
    error: Callable[[Path, list[ConfigIssue]], ConfigError],
    base: Path | None = None,
    seen: tuple[Path, ...] = (),
) -> tuple[dict[str, Any], list[tuple[Path, Node]]]:
    """Load ``path`` and everything it ``extends`` (``base``, when given, instead of what ``path`` itself extends);
    returns the merged document and (file, node) pairs, child first."""
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise error(path, [ConfigIssue("extends", f"circular extends: {chain}", path)])
    doc, node = read_yaml(path, error)
    parent = doc.pop("extends", None)
    if base is not None:
        parent = str(base.resolve())
    if parent is None:
        return doc, [(path, node)]
    if not isinstance(parent, str):
        raise error(path, [ConfigIssue("extends", "must be a path to another config", path)])
    parent_doc, nodes = resolve_extends((path.parent / parent).resolve(), keyed, error, None, (*seen, path))
    issues: list[ConfigIssue] = []
    merged = merge(parent_doc, doc, keyed, issues, path)
    if issues:
        raise error(path, issues)
    return merged, [(path, node), *nodes]


_OVERRIDE = re.compile(r"^([A-Za-z_][\w.\[\]-]*)=(.*)$", re.S)


def _override_keys(key: str) -> list[str | int]:
    return [int(t) if t.isdigit() else t for t in re.split(r"\.|\[|\]", key) if t != ""]


@dataclass(frozen=True)
class Override:
    """One applied ``key.path=value``: where it landed in the document (keyed items turned into indices)."""

    text: str
    loc: tuple[str | int, ...]


def apply_overrides(
    doc: dict[str, Any], overrides: Sequence[str], keyed: Mapping[str, str]
) -> tuple[list[Override], list[ConfigIssue]]:
    """Apply ``key.path=value`` overrides in place (values parsed as YAML); items of a keyed list may be named or
    indexed: ``stages.sft.max_steps=3`` or ``stages[1].max_steps=3``."""
    applied: list[Override] = []
    issues: list[ConfigIssue] = []
    for item in overrides:
        match = _OVERRIDE.match(item)
        if not match:
            issues.append(ConfigIssue(item, "override must look like key.path=value"))
            continue
        keys = _override_keys(match.group(1))
        try:
            value = yaml.safe_load(match.group(2))
        except yaml.YAMLError as exc:
            issues.append(ConfigIssue(match.group(1), f"override value is not valid YAML: {exc}"))
            continue
        target: Any = doc
        try:
            for depth, key in enumerate(keys[:-1]):
                if depth == 1 and isinstance(keys[0], str) and keys[0] in keyed and isinstance(key, str):
                    field = keyed[keys[0]]
                    key = next(i for i, s in enumerate(target) if isinstance(s, dict) and s.get(field) == key)
                    keys[depth] = key
                target = target.setdefault(key, {}) if isinstance(target, dict) else target[key]
            last = keys[-1]
            if not (isinstance(target, dict) or (isinstance(target, list) and isinstance(last, int))):
                raise TypeError
            cast(Any, target)[last] = value
        except (StopIteration, IndexError, KeyError, TypeError):
            issues.append(ConfigIssue(match.group(1), "override does not name an existing place in the config"))
            continue
        applied.append(Override(item, tuple(keys)))
    return applied, issues
