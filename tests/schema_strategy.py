"""A Hypothesis strategy for the values a JSON Schema describes (what pydantic's
``model_json_schema()`` writes: ``$ref``/``$defs``, ``anyOf``, ``enum``/``const``, objects
with ``properties``/``required``/``additionalProperties``, arrays, strings with lengths and
patterns, bounded numbers). hypothesis-jsonschema does this in general but does not run on
the Hypothesis this suite pins; this covers the keywords our request schemas use, and draws
optional properties and aliases as often as required ones."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

MAX_ITEMS = 4
JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()


def from_json_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    return _node(schema, schema.get("$defs", {}), depth=0)


def _node(node: dict[str, Any], defs: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return st.deferred(lambda: _node(defs[name], defs, depth + 1))
    if "const" in node:
        return st.just(node["const"])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    for key in ("anyOf", "oneOf"):
        if key in node:
            return st.one_of([_node(n, defs, depth) for n in node[key]])
    if "allOf" in node and len(node["allOf"]) == 1:
        return _node(node["allOf"][0], defs, depth)
    kind = node.get("type")
    if isinstance(kind, list):
        return st.one_of([_node({**node, "type": k}, defs, depth) for k in kind])
    if kind == "object":
        return _object(node, defs, depth)
    if kind == "array":
        items = node.get("items")
        inner = _node(items, defs, depth + 1) if items else JSON_LEAVES
        return st.lists(
            inner,
            min_size=node.get("minItems", 0),
            max_size=min(node.get("maxItems", MAX_ITEMS), MAX_ITEMS),
        )
    if kind == "string":
        if "pattern" in node:
            return st.from_regex(node["pattern"], fullmatch=True).filter(
                lambda s: node.get("minLength", 0) <= len(s) <= node.get("maxLength", 10**6)
            )
        return st.text(
            min_size=node.get("minLength", 0), max_size=min(node.get("maxLength", 40), 40)
        )
    if kind == "integer":
        return st.integers(node.get("minimum"), node.get("maximum"))
    if kind == "number":
        return st.floats(
            node.get("minimum", node.get("exclusiveMinimum")),
            node.get("maximum", node.get("exclusiveMaximum")),
            exclude_min="exclusiveMinimum" in node,
            exclude_max="exclusiveMaximum" in node,
            allow_nan=False,
            allow_infinity=False,
        )
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return JSON_LEAVES  # {} or a keyword not used here: any JSON


def _object(node: dict[str, Any], defs: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
    props = node.get("properties")
    if props is None:
        extra = node.get("additionalProperties", {})
        values = _node(extra, defs, depth + 1) if isinstance(extra, dict) else JSON_LEAVES
        return st.dictionaries(st.text(max_size=20), values, max_size=MAX_ITEMS)
    required = set(node.get("required", ()))
    return st.fixed_dictionaries(
        {k: _node(v, defs, depth + 1) for k, v in props.items() if k in required},
        optional={k: _node(v, defs, depth + 1) for k, v in props.items() if k not in required},
    )
