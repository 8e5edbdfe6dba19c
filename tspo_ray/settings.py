"""The one way settings are declared: a pydantic model per settings object, checked from its declaration.

`Settings` subclasses declare fields with types, ranges (`Field(ge=..., gt=...)`), choices (`Literal`) and a
docstring under each field. `Model.load(raw, where)` checks types (strictly: "2" is not a number, 1 is not true),
ranges and unknown keys, and raises ConfigError naming the field's full path and the reason, e.g.
`answerer.settings.max_tokens: must be >= 1, got 0`. Two leniencies keep old YAML loading: a number given where a
string is declared is read as that string, and "3e-3" (YAML 1.1 reads it as a string) as a number.
"""
from __future__ import annotations

import types
import typing
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from pydantic_core import PydanticUndefined


class ConfigError(ValueError):
    """An invalid config value; the message starts with the dotted field name."""


def _accepts(hint: Any, kind: type) -> bool:
    """Whether a field's annotation takes values of `kind` (itself, or inside an Optional/Union)."""
    if hint is kind:
        return True
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_accepts(a, kind) for a in typing.get_args(hint))
    return False


def _is_tuple(hint: Any) -> bool:
    if typing.get_origin(hint) is tuple:
        return True
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and any(
        _is_tuple(a) for a in typing.get_args(hint))


class Settings(BaseModel):
    """A settings object: unknown keys refused, types checked strictly, each field documented by its docstring."""

    model_config = ConfigDict(extra="forbid", strict=True, use_attribute_docstrings=True)
    #: what an unknown key is called in errors ("unknown <label> option"); "" for plain "unknown option"
    label: ClassVar[str] = ""
    #: where the settings sit in a job config, the prefix of error paths when load is not told (e.g.
    #: "answerer.settings")
    section: ClassVar[str] = ""

    @field_validator("*", mode="before")
    @classmethod
    def _yaml_leniency(cls, value: Any, info) -> Any:
        hint = cls.model_fields[info.field_name].annotation
        if isinstance(value, (int, float)) and not isinstance(value, bool) and _accepts(hint, str) \
                and not (_accepts(hint, int) or _accepts(hint, float)):
            return str(value)
        if isinstance(value, str) and _accepts(hint, float):
            try:
                return float(value)
            except ValueError:
                return value
        if isinstance(value, list) and _is_tuple(hint):
            return tuple(value)
        return value

    @classmethod
    def load(cls, raw: Any = None, where: str | None = None):
        """The settings from a mapping (None: all defaults); ConfigError naming `where.<field>` on a bad value
        (where: the class's section by default)."""
        where = cls.section if where is None else where
        if isinstance(raw, cls):
            return raw
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{where or 'config'}: expected a mapping, got {raw!r}")
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            raise ConfigError(describe(e, where, cls)) from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="python")


# --- error messages ------------------------------------------------------------------------------------------------

def _path(where: str, loc: tuple) -> str:
    out = where
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else str(part)
    return out or "config"


def _model_at(cls: type, loc: tuple) -> type | None:
    """The settings model that holds the last key of `loc` (for the list of known options)."""
    model = cls
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        hint = field.annotation if field else None
        model = hint if isinstance(hint, type) and issubclass(hint, BaseModel) else None
    return model


def _choices(expected: str) -> str:
    return expected.replace("' or '", ", ").replace("', '", ", ").strip("'")


_REASONS = {
    "int_type": "expected an integer", "int_from_float": "expected an integer", "int_parsing": "expected an integer",
    "float_type": "expected a number", "float_parsing": "expected a number", "bool_type": "expected true/false",
    "bool_parsing": "expected true/false", "string_type": "expected a string", "list_type": "expected a list",
    "dict_type": "expected a mapping", "model_type": "expected a mapping", "tuple_type": "expected a list",
    "finite_number": "must be a finite number",
}


def reason(err: dict) -> str:
    """One pydantic error as a short reason ending with the value given."""
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "missing":
        return "required"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        limit = int(limit) if isinstance(limit, float) and limit.is_integer() else limit
        text = f"must be {bounds[kind]} {limit}"
    elif kind == "literal_error":
        text = f"must be one of {_choices(str(ctx.get('expected', '')))}"
    elif kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", err["msg"])).removeprefix("Value error, ")
    elif kind in _REASONS:
        text = _REASONS[kind]
    else:
        text = err["msg"]
    return f"{text}, got {value!r}"


def describe(e: ValidationError, where: str, cls: type) -> str:
    """The first error of a validation, as `path: reason`; unknown keys list the known ones."""
    errs = e.errors()
    err = next((x for x in errs if x["type"] == "extra_forbidden"), errs[0])
    loc = tuple(err["loc"])
    path = _path(where, loc)
    if err["type"] == "extra_forbidden":
        model = _model_at(cls, loc)
        known = f" (known: {', '.join(model.model_fields)})" if model else ""
        label = f"{model.label} " if model is not None and model.label else ""
        return f"{path}: unknown {label}option{known}"
    error = (err.get("ctx") or {}).get("error")
    if isinstance(error, ConfigError):  # a check across fields (a model validator) names its own field
        return str(error)
    return f"{path}: {reason(err)}"


# --- the reference page -------------------------------------------------------------------------------------------

def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(hint))
    name = getattr(hint, "__name__", None) if typing.get_origin(hint) is None else None
    return name or str(hint).replace("typing.", "").replace("|", "\\|")


def _default(field) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return "(section)"
    return f"`{value!r}`".replace("|", "\\|")


def reference(model: type, prefix: str) -> list[str]:
    """Markdown rows `| key | type | default | meaning |` for a model's fields, sections expanded after."""
    rows, sections = [], []
    for name, field in model.model_fields.items():
        hint = field.annotation
        key = f"{prefix}.{name}" if prefix else name
        if isinstance(hint, type) and issubclass(hint, BaseModel):
            sections.append((hint, key))
            continue
        limits = [f"{k} {v}" for m in field.metadata for k, v in
                  (("≥", getattr(m, "ge", None)), (">", getattr(m, "gt", None)), ("≤", getattr(m, "le", None)),
                   ("<", getattr(m, "lt", None))) if v is not None]
        doc = " ".join((field.description or "").split()).replace("|", "\\|")
        rows.append(f"| `{key}` | {_type_name(hint)}{' (' + ', '.join(limits) + ')' if limits else ''} | "
                    f"{_default(field)} | {doc} |")
    for sub, key in sections:
        rows.extend(reference(sub, key))
    return rows
