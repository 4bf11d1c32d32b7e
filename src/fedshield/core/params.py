"""Declarative parameter specs, shared by attacks, defenses and post-training methods.

A spec maps each parameter name to a :class:`Param` (default, whether it is required, a check of the value and
the allowed range in words). :func:`validate_params` rejects unknown and missing keys and invalid values with a
:class:`ParameterError` naming the parameter. A spec can be written out (attacks) or read from a constructor's
signature (:func:`spec_from_signature`, defenses: the constructor then checks the values itself).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from .errors import ParameterError
from .numeric import is_bool, is_finite_number, is_int

__all__ = ["Param", "number", "integer", "choice", "boolean", "require", "validate_params", "spec_from_signature"]


def _always(_v: Any) -> bool:
    return True


def _same(v: Any) -> Any:
    return v


@dataclass(frozen=True)
class Param:
    """One parameter: default, a check of the value, and the allowed range in words.

    ``required`` parameters have no default. ``convert`` normalises a valid value (e.g. int → float).
    """

    default: Any = None
    check: Callable[[Any], bool] = _always
    allowed: str = ""
    required: bool = False
    convert: Callable[[Any], Any] = _same


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False,
           default: Any = None, required: bool = False, nullable: bool = False) -> Param:
    """A finite float parameter in a (half-)open or closed interval (NaN and ±Inf are refused)."""

    def check(v: Any) -> bool:
        if v is None:
            return nullable
        if not is_finite_number(v):
            return False
        if lo is not None and (v <= lo if lo_open else v < lo):
            return False
        if hi is not None and (v >= hi if hi_open else v > hi):
            return False
        return True

    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    rng = f"a finite number in {left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
    if nullable:
        rng += " or null"
    return Param(default, check, rng, required, lambda v: None if v is None else float(v))


def integer(lo: int = 0, default: Any = None, nullable: bool = False) -> Param:
    return Param(
        default,
        lambda v: (v is None and nullable) or (is_int(v) and v >= lo),
        f"an integer >= {lo}" + (" or null" if nullable else ""),
    )


def choice(*values: Any, default: Any = None) -> Param:
    return Param(default if default is not None else values[0], lambda v: v in values, f"one of {list(values)}")


def boolean(default: bool) -> Param:
    return Param(default, is_bool, "true or false")


def validate_params(owner: str, spec: Mapping[str, Param], params: Mapping[str, Any] | None) -> dict[str, Any]:
    """``params`` completed with defaults and converted; :class:`ParameterError` ``"<owner>: ..."`` naming the
    first unknown, missing or invalid parameter."""
    if params is not None and not isinstance(params, Mapping):
        raise ParameterError(f"{owner}: parameters must be a mapping of names to values, got {params!r}")
    params = dict(params or {})
    unknown = sorted(set(params) - set(spec), key=str)
    if unknown:
        raise ParameterError(f"{owner}: unknown parameter {unknown[0]!r}; allowed: {sorted(spec)}")
    out: dict[str, Any] = {}
    for key, p in spec.items():
        if key not in params:
            if p.required:
                raise ParameterError(f"{owner}: parameter {key!r} is required ({p.allowed})")
            out[key] = p.default
            continue
        v = params[key]
        if not p.check(v):
            raise ParameterError(f"{owner}: {key}={v!r} is invalid; {p.allowed}")
        out[key] = p.convert(v)
    return out


def spec_from_signature(fn: Callable[..., Any], exclude: Iterable[str] = ()) -> dict[str, Param]:
    """The keyword parameters of ``fn`` (a class: its ``__init__``) as a spec: names, defaults, which are required.

    Values are not checked here (``check`` accepts anything): the constructor checks them. ``exclude``: arguments
    that come from the experiment rather than the config (a model builder, the server's data).
    """
    skip = set(exclude) | {"self"}
    spec: dict[str, Param] = {}
    for name, p in inspect.signature(fn).parameters.items():
        if name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        required = p.default is p.empty
        spec[name] = Param(None if required else p.default, required=required, allowed="see the constructor")
    return spec


def require(condition: bool, name: str, value: Any, allowed: str) -> None:
    """Raise :class:`ParameterError` ``"<name>=<value> is invalid; <allowed>"`` unless ``condition`` (for checks
    written in a constructor)."""
    if not condition:
        raise ParameterError(f"{name}={value!r} is invalid; {allowed}")
