"""Reading YAML a person wrote (search files, student configs): safe, strict and bounded.

:func:`load_yaml` is ``yaml.safe_load`` (no Python objects are ever built: ``!!python/object`` is refused) plus:

* a key written twice in one mapping is refused, naming both lines (PyYAML would silently keep the last);
* the text may be at most :data:`MAX_YAML_BYTES`, and the document may expand to at most :data:`MAX_YAML_VALUES`
  values counting every alias where it is used: a few lines of nested aliases ("billion laughs") otherwise become
  millions of values, and quoting one in an error message took gigabytes. A structure that contains itself is
  refused too.

Every problem is a :class:`~asc_search.errors.ConfigError` naming the source and the line.
"""

from __future__ import annotations

from typing import Any

import yaml

from .errors import ConfigError, quote

__all__ = ["MAX_YAML_BYTES", "MAX_YAML_VALUES", "load_yaml"]

#: The largest YAML text read (a search file is ~2-4 KB).
MAX_YAML_BYTES = 1 << 20
#: The most values (scalars, lists, mappings) a document may expand to, aliases counted where they are used.
MAX_YAML_VALUES = 100_000


class _Refused(Exception):
    """A well-formed document this reader refuses (the message says why and where)."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            try:
                line = first.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: SafeLoader reports it below
                continue
            if line != key_node.start_mark.line + 1:
                raise _Refused(f"line {key_node.start_mark.line + 1}: key {quote(key, 80)} appears again (first on "
                               f"line {line}); each key may appear once in a mapping")
        return super().construct_mapping(node, deep=deep)


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """How many values the document expands to (a node reached twice through aliases counts twice); stops past
    ``limit``. Raises _Refused for a structure that contains itself."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise _Refused(f"line {node.start_mark.line + 1}: an alias refers to a value that contains it; a search "
                           "file cannot hold a structure that contains itself")
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > limit:
                break
        active.discard(key)
        sizes[key] = total
        return total

    return size(root)


def load_yaml(text: str, source: str, limit: int = MAX_YAML_VALUES) -> Any:
    """The YAML document ``text`` as plain Python values (None for an empty one); ``source`` names it in errors."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{source}: {len(text):,} characters; expected a YAML file of at most {MAX_YAML_BYTES:,}")
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        values = _expanded_size(node, limit)
        if values > limit:
            raise _Refused(f"expands to more than {limit:,} values (nested aliases: &name / *name); a search file "
                           "holds a few hundred")
        return loader.construct_document(node)
    except _Refused as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to read") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())[:300]
        raise ConfigError(f"{source}: not valid YAML: {where}{problem}") from None
    finally:
        loader.dispose()
