"""Job templates: a job file with `{{ param }}` placeholders and parameter sets -> one job file per set.

Rendered by Jinja2's SandboxedEnvironment with StrictUndefined: a placeholder without a
value is an error, never an empty string. Only `{{ ... }}` is special: Jinja's block and
comment markers are moved out of the way, since `${#array[@]}` or `printf '{%s}'` are
ordinary bash. A value that could change the file's lines (a line break of any kind, any
control character) is refused before rendering, and every printed value is checked again,
so a parameter can fill in a value but never add an `#SBATCH` or `#K8S_` line. The rendered
file then goes through the same validation as any other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

ParamValue = str | int | float | bool

_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# Everything Python's str.splitlines, bash or Slurm could take as the end of a line, and
# every other control character (tab included: it splits #SBATCH words).
_BREAKING = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
MAX_VALUE_CHARS = 1024


class TemplateProblem(ValueError):
    """The template or one parameter set cannot make a job file; `index` is the set (1-based) or None."""

    def __init__(self, message: str, *, index: int | None = None, code: str = "template") -> None:
        super().__init__(message)
        self.index = index
        self.code = code

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "code": self.code, "message": str(self)}


def _finalize(value: Any) -> Any:
    if isinstance(value, str) and _BREAKING.search(value):
        raise TemplateProblem(f"a placeholder printed a line break or control character: {value[:60]!r}",
                              code="value-breaks-lines")
    return value


class _Environment(SandboxedEnvironment):
    """The sandbox, also refusing `"x" * 10**9` and `9 ** 9 ** 9`: a template is the caller's, its
    cost is the service's."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > 64:
            raise SecurityError("exponent too large")
        if operator == "*" and any(isinstance(a, str | list | tuple) for a in (left, right)):
            count = right if isinstance(right, int) else left
            if isinstance(count, int) and count > MAX_VALUE_CHARS:
                raise SecurityError("repetition too large")
        return super().call_binop(context, operator, left, right)


def _environment() -> SandboxedEnvironment:
    return _Environment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True, finalize=_finalize,
        block_start_string="<%skbridge", block_end_string="%>", comment_start_string="<#skbridge",
        comment_end_string="#>",
    )


def check_parameters(index: int, params: dict[str, ParamValue]) -> None:
    for name, value in params.items():
        if not _PARAM_NAME.match(name):
            raise TemplateProblem(f"parameter name {name!r}: letters, digits and _ only", index=index,
                                  code="bad-parameter-name")
        text = str(value)
        if len(text) > MAX_VALUE_CHARS:
            raise TemplateProblem(f"parameter {name}: at most {MAX_VALUE_CHARS} characters", index=index,
                                  code="value-too-long")
        if _BREAKING.search(text):
            raise TemplateProblem(f"parameter {name}: a value may not hold a line break or control character "
                                  "(it would change the job file's lines)", index=index, code="value-breaks-lines")


@dataclass(frozen=True)
class Rendered:
    index: int  # 1-based
    name: str
    script: str


def render_all(script: str, name: str, parameter_sets: list[dict[str, ParamValue]]) -> list[Rendered]:
    """Every set rendered, or TemplateProblem for the first that cannot be (nothing is half done)."""
    env = _environment()
    try:
        body = env.from_string(script)
        title = env.from_string(name)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"line {exc.lineno}: {exc.message}", code="template-syntax") from exc
    out: list[Rendered] = []
    for index, params in enumerate(parameter_sets, start=1):
        check_parameters(index, params)
        context = {**params, "index": index}
        try:
            out.append(Rendered(index=index, name=title.render(context), script=body.render(context)))
        except TemplateProblem as exc:
            raise TemplateProblem(str(exc), index=index, code=exc.code) from exc
        except TemplateError as exc:
            raise TemplateProblem(f"{type(exc).__name__}: {exc}", index=index, code="template-render") from exc
    return out
