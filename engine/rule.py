"""A rule as kbrules runs it: its text, its compiled check, its message templates and
its own examples. Plain data; engine/loader.py makes these from rule files."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any, Optional

from .model import Context
from .text import sh_quote, tostring

FILTERS = ("sh",)  # {field|sh}: the value quoted as one word for a POSIX shell


CODE = "``"  # around a command in a template, as in reStructuredText


@dataclass(frozen=True)
class Template:
    """Text with {field} and {field|sh} placeholders; {{ and }} are literal braces.
    A command the reader may copy is written between ``double backquotes``: the
    rendered text leaves the quotes out, the text report puts the command on a line of
    its own, and the docs show it as code."""

    text: str  # as written in the rules file
    parts: tuple[tuple[str, Optional[str], Optional[str]], ...]  # (literal, field, filter), no ``
    commands: tuple["Template", ...] = ()  # the ``...`` spans, in order

    @staticmethod
    def parse(text: str) -> "Template":
        spans = text.split(CODE)
        if len(spans) % 2 == 0:
            raise ValueError(f"bad template {text!r}: a `` without its closing ``")
        return Template(text, Template._parts("".join(spans)),
                        tuple(Template(s, Template._parts(s)) for s in spans[1::2]))

    @staticmethod
    def _parts(text: str) -> tuple[tuple[str, Optional[str], Optional[str]], ...]:
        parts: list[tuple[str, Optional[str], Optional[str]]] = []
        try:
            for literal, field, spec, conv in string.Formatter().parse(text):
                if field is None:
                    parts.append((literal, None, None))
                    continue
                if spec or conv or not field:
                    raise ValueError(f"placeholder {{{field}}}: write {{field}} or {{field|sh}}")
                name, _, filt = field.partition("|")
                if filt and filt not in FILTERS:
                    raise ValueError(f"unknown filter '|{filt}' in {{{field}}}")
                parts.append((literal, name, filt or None))
        except ValueError as e:
            raise ValueError(f"bad template {text!r}: {e}") from None
        return tuple(parts)

    def fields(self) -> list[str]:
        return [f for _, f, _ in self.parts if f is not None]

    def render(self, facts: dict[str, Any]) -> str:
        out = []
        for literal, field, filt in self.parts:
            out.append(literal)
            if field is not None:
                value = facts.get(field)
                out.append(sh_quote(value) if filt == "sh" else tostring(value))
        return "".join(out)

    def render_commands(self, facts: dict[str, Any]) -> tuple[str, ...]:
        """The commands of the rendered text, each as it stands in render()'s result."""
        return tuple(c.render(facts) for c in self.commands)

    def render_argv(self, facts: dict[str, Any]) -> tuple[tuple[str, ...], ...]:
        """The commands as words (argv): their literal text split at spaces, each
        placeholder's value within one word, never split and never quoted."""
        return tuple(c.words(facts) for c in self.commands)

    def words(self, facts: dict[str, Any]) -> tuple[str, ...]:
        return tuple("".join(literal if field is None else tostring(facts.get(field)) for literal, field in word)
                     for word in self.word_parts())

    def word_parts(self) -> tuple[tuple[tuple[str, Optional[str]], ...], ...]:
        """The command's words, each as its pieces: (literal, None) or ("", field) for
        a placeholder, whose value stays within its word (the jq program renders the
        same pieces)."""
        out: list[tuple[tuple[str, Optional[str]], ...]] = []
        word: Optional[list[tuple[str, Optional[str]]]] = None
        for literal, field, _ in self.parts:
            for i, piece in enumerate(re.split(r"\s+", literal)):
                if i > 0 and word is not None:  # a space ends the word
                    out.append(tuple(word))
                    word = None
                if piece:
                    word = (word or []) + [(piece, None)]
            if field is not None:
                word = (word or []) + [("", field)]
        return tuple(out + ([tuple(word)] if word is not None else []))

    def pieces(self) -> list[tuple[str, bool]]:
        """The text as (piece, is_command) with each placeholder as its field's name in
        capitals (FILENAME; a shell word where |sh quotes it): how a person reads the
        template, in `kbrules explain` and in the docs."""
        out = []
        for number, span in enumerate(self.text.split(CODE)):
            words = []
            for literal, field, _ in Template._parts(span):
                words.append(literal)
                if field is not None:
                    words.append(field.upper())
            out.append(("".join(words), number % 2 == 1))
        return out


@dataclass(frozen=True)
class Example:
    """One of a rule's own examples: an input that passes or fails it."""

    expect: str  # "pass" or "fail"
    bitmaps: tuple[str, ...]
    input: Any
    layers: Optional[tuple[int, ...]]  # where a failing example's findings must be
    line: Optional[int] = None  # in the rules file
    context: Context = Context()  # what kbrules knows besides the input: a libvirt domain...


@dataclass(frozen=True)
class Rule:
    """A rule as the loader makes it from its YAML."""

    id: str
    title: str
    severity: str
    subject: str  # a kind of engine.subjects.KINDS
    statement: str
    require: Any  # the expression, as written (engine/pybackend.py compiles the rule set)
    at: Any  # expression of the finding's layer
    message: Template
    remediation: dict[str, Template]  # by advice (model.ADVICE): whose commands fit
    examples: tuple[Example, ...]
    article: str
    source: str  # the file it came from
    line: Optional[int]  # where the rule starts in it
