r"""A1111's prompt language, as stable-diffusion-webui v1.10.1 reads it: emphasis and prompt editing.

Emphasis, read by `parse_prompt_attention`:

    (text)          weight x1.1; nesting multiplies, so ((text)) is x1.21
    [text]          weight /1.1
    (text:1.5)      weight x1.5
    \( \) \[ \] \\  a literal bracket or backslash
    BREAK           a ["BREAK", -1] entry of its own: the text encoder starts a new 75-token chunk there

A bracket never closed weighs on the rest of the prompt; a closing bracket with nothing open is text.

Prompt editing, read by `get_learned_conditioning_prompt_schedules`:

    [from:to:when]  `from` up to step `when`, then `to`
    [to:when]       nothing, then `to`
    [from::when]    `from`, then nothing
    [a|b|c]         a on step 1, b on step 2, c on step 3, a on step 4, ...

`when` is a step, or with a "." in it a fraction of the steps: [x:.25] switches a quarter of the way in.
Given `hires_steps`, the schedule is the hires pass's, on a timeline that continues the base pass: a step
past the base steps (12 after 10 base steps is hires step 2), a fraction from 1.0 on (1.5 is halfway
through the hires pass); what switched during the base pass stays switched. `use_old_scheduling` ignores
the hires pass and reads any `when` below 1 as a fraction, anything else as a step.

Edits nest, and emphasis inside them is kept as written, for `parse_prompt_attention`. A bracket that
does not form one of these stays text, but a `|` outside `[...|...]`, or a backslash with nothing after
it on its line, leaves the whole prompt as written for every step. (v1.10.1 has no `[a|b:n]` form: such a
prompt is left as written too.)
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

_ROUND_MULTIPLIER = 1.1
_SQUARE_MULTIPLIER = 1 / 1.1  # applied as a product, as A1111 does: x * (1 / 1.1) and x / 1.1 can differ

# One token of the emphasis syntax, tried in this order; group 1 is an explicit `(text:weight)` weight.
_ATTENTION_TOKEN = re.compile(
    r"""
    \\[()\[\]\\]?               # an escape, or a lone backslash that escapes nothing
    | [(\[]                     # an opening bracket
    | :\s*([+-]?[.\d]+)\s*\)    # a weight closing a round bracket
    | [)\]]                     # a closing bracket
    | [^\\()\[\]:]+             # text
    | :                         # a colon that is not a weight
    """,
    re.VERBOSE,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*")

# Prompt-editing tokens. Text runs up to a bracket, colon or bar; a backslash escapes the next character
# unless that is a line break.
_TEXT = re.compile(r"(?:[^\\\[\]():|]|\\.)+")
# The `when` that ends an edit, with the closing bracket: an optionally signed int or decimal, maybe an exponent.
_WHEN = re.compile(r"\s*([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\s*\]")
_STOP_CHARS = ":|)]"  # end a run of prompt inside brackets
_CLOSING = {")": "(", "]": "["}
_LITERAL_CHARS = "[]():"  # may stand as plain text outside any bracket

_Chunk = list[str | float]  # [text, weight]
_Schedule = list[list[int | str]]  # [[end_step, prompt], ...]


def parse_prompt_attention(text: str) -> list[_Chunk]:
    """Split `text` into [text, weight] chunks, adjacent chunks of equal weight merged.

    >>> parse_prompt_attention("an (important) word")
    [['an ', 1.0], ['important', 1.1], [' word', 1.0]]
    """
    chunks: list[_Chunk] = []
    open_round: list[int] = []
    open_square: list[int] = []
    for match in _ATTENTION_TOKEN.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            chunks.append([token[1:], 1.0])
        elif token == "(":
            open_round.append(len(chunks))
        elif token == "[":
            open_square.append(len(chunks))
        elif weight is not None and open_round:
            _scale_from(chunks, open_round.pop(), float(weight))
        elif token == ")" and open_round:
            _scale_from(chunks, open_round.pop(), _ROUND_MULTIPLIER)
        elif token == "]" and open_square:
            _scale_from(chunks, open_square.pop(), _SQUARE_MULTIPLIER)
        else:
            _append_text(chunks, token)
    for start in open_round:
        _scale_from(chunks, start, _ROUND_MULTIPLIER)
    for start in open_square:
        _scale_from(chunks, start, _SQUARE_MULTIPLIER)
    return _merge_equal_weights(chunks) or [["", 1.0]]


def _scale_from(chunks: list[_Chunk], start: int, multiplier: float) -> None:
    """Multiply the weights of every chunk from index `start` on: a bracket that just closed."""
    for chunk in chunks[start:]:
        chunk[1] *= multiplier


def _append_text(chunks: list[_Chunk], text: str) -> None:
    """Append plain text, each BREAK (with the whitespace around it) becoming a ["BREAK", -1] chunk."""
    for index, part in enumerate(_BREAK.split(text)):
        if index > 0:
            chunks.append(["BREAK", -1])
        chunks.append([part, 1.0])


def _merge_equal_weights(chunks: list[_Chunk]) -> list[_Chunk]:
    merged: list[_Chunk] = []
    for text, weight in chunks:
        if merged and merged[-1][1] == weight:
            merged[-1][0] += text
        else:
            merged.append([text, weight])
    return merged


@dataclass(frozen=True)
class _Edit:
    """`[before:after:when]`; `when` as written, since its meaning depends on the timeline."""

    before: tuple[_Node, ...]
    after: tuple[_Node, ...]
    when: str


@dataclass(frozen=True)
class _Alternation:
    """`[a|b|...]`: one option per step, in turn."""

    options: tuple[tuple[_Node, ...], ...]


_Node = str | _Edit | _Alternation
_Parsed = tuple[tuple[_Node, ...], int]  # nodes, and the position just after them


@dataclass(frozen=True)
class _Timeline:
    """How `when` values map to steps: A1111's base-only, hires and old schedulings."""

    steps: int
    whole_offset: int = 0
    fraction_offset: float = 0.0
    old: bool = False

    @classmethod
    def create(cls, base_steps: int, hires_steps: int | None, use_old_scheduling: bool) -> _Timeline:
        if use_old_scheduling:
            return cls(base_steps, old=True)
        if hires_steps is None:
            return cls(base_steps)
        return cls(hires_steps, whole_offset=base_steps, fraction_offset=1.0)

    def step(self, when: str) -> int:
        """The last step of an edit's `before` part (below 1: none)."""
        value = float(when)
        if self.old:
            value = value * self.steps if value < 1 else value
        elif "." in when:
            value = (value - self.fraction_offset) * self.steps
        else:
            value = value - self.whole_offset
        return min(self.steps, int(value))


class _EditParser:
    """Recursive descent over one prompt; a method returns None where its construct does not parse.

    Inside brackets everything must parse. Outside them, a bracket or colon that starts nothing complete
    is kept as a character of text.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.items: dict[int, _Parsed | None] = {}
        self.closable = _closable_brackets(text)

    def parse(self) -> tuple[_Node, ...] | None:
        """The whole prompt, read left to right, each construct taken where it parses; None: none at all.

        A1111 reads the prompt with an ambiguous grammar. Where a stray closing bracket or colon follows a
        construct, as in `[a:1]]`, its choice between the construct and plain text depends on Python's
        hash seed; this always takes the construct, one of its outcomes. Elsewhere the two agree.
        """
        nodes: list[_Node] = []
        pos = 0
        while pos < len(self.text):
            found = self._item(pos)
            if found is not None:
                item, pos = found
                nodes.extend(item)
            elif self.text[pos] in _LITERAL_CHARS:
                nodes.append(self.text[pos])
                pos += 1
            else:
                return None
        return tuple(nodes)

    def _char(self, pos: int) -> str:
        return self.text[pos : pos + 1]

    def _prompt(self, pos: int) -> _Parsed | None:
        """Items up to a stop character or the end of the text."""
        nodes: list[_Node] = []
        while pos < len(self.text) and self.text[pos] not in _STOP_CHARS:
            found = self._item(pos)
            if found is None:
                return None
            item, pos = found
            nodes.extend(item)
        return tuple(nodes), pos

    def _item(self, pos: int) -> _Parsed | None:
        """A text run or a bracketed construct starting at `pos`; cached, as a bracket that fails outside
        all brackets is read again from the next character."""
        if pos not in self.items:
            self.items[pos] = self._read_item(pos)
        return self.items[pos]

    def _read_item(self, pos: int) -> _Parsed | None:
        char = self.text[pos]
        if char in "([" and pos not in self.closable:
            return None
        if char == "(":
            return self._round(pos + 1)
        if char == "[":
            return self._square(pos + 1)
        match = _TEXT.match(self.text, pos)
        return ((match.group(),), match.end()) if match else None

    def _round(self, pos: int) -> _Parsed | None:
        """`(text)` or `(text:text)`: emphasis, kept as written."""
        found = self._prompt(pos)
        if found is None:
            return None
        inner, pos = found
        if self._char(pos) == ":":
            found = self._prompt(pos + 1)
            if found is None:
                return None
            weight, pos = found
            inner = (*inner, ":", *weight)
        if self._char(pos) != ")":
            return None
        return ("(", *inner, ")"), pos + 1

    def _square(self, pos: int) -> _Parsed | None:
        """`[text]` emphasis, `[a|b]` alternation or one of the `[from:to:when]` edits."""
        found = self._prompt(pos)
        if found is None:
            return None
        first, pos = found
        char = self._char(pos)
        if char == "]":
            return ("[", *first, "]"), pos + 1
        if char == "|":
            return self._alternation(first, pos)
        if char == ":":
            return self._edit(first, pos + 1)
        return None

    def _alternation(self, first: tuple[_Node, ...], pos: int) -> _Parsed | None:
        options = [first]
        while self._char(pos) == "|":
            found = self._prompt(pos + 1)
            if found is None:
                return None
            option, pos = found
            options.append(option)
        if self._char(pos) != "]":
            return None
        return (_Alternation(tuple(options)),), pos + 1

    def _edit(self, first: tuple[_Node, ...], pos: int) -> _Parsed | None:
        """After `[first:`: either `when]` (first is the `to` part) or `to:when]`."""
        when = _WHEN.match(self.text, pos)
        if when:
            return (_Edit((), first, when.group(1)),), when.end()
        found = self._prompt(pos)
        if found is None:
            return None
        after, pos = found
        when = _WHEN.match(self.text, pos + 1) if self._char(pos) == ":" else None
        if not when:
            return None
        return (_Edit(first, after, when.group(1)),), when.end()


def _closable_brackets(text: str) -> set[int]:
    """Positions of the opening brackets that a matching bracket closes, all in between nested properly.

    Only these can start a construct. Checking first keeps a run of unclosed brackets from nesting the
    parser's recursion once per bracket.
    """
    closable: set[int] = set()
    open_at: list[int] = []
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char == "\\":
            pos += 1  # whatever it escapes
        elif char in "([":
            open_at.append(pos)
        elif char in _CLOSING:
            if open_at and text[open_at[-1]] == _CLOSING[char]:
                closable.add(open_at.pop())
            else:
                open_at.clear()  # a mismatched bracket: everything still open fails
        pos += 1
    return closable


def _walk(nodes: tuple[_Node, ...]) -> Iterator[_Edit | _Alternation]:
    """Every edit and alternation, including those nested in parts not shown at a given step."""
    for node in nodes:
        if isinstance(node, _Edit):
            yield node
            yield from _walk(node.before)
            yield from _walk(node.after)
        elif isinstance(node, _Alternation):
            yield node
            for option in node.options:
                yield from _walk(option)


def _change_steps(nodes: tuple[_Node, ...], timeline: _Timeline) -> set[int]:
    """Steps after which the prompt may change: each edit's step, every step if anything alternates."""
    steps = {timeline.steps}
    for node in _walk(nodes):
        if isinstance(node, _Alternation):
            steps.update(range(1, timeline.steps + 1))
        elif (step := timeline.step(node.when)) >= 1:
            steps.add(step)
    return steps


def _render(nodes: tuple[_Node, ...], step: int, timeline: _Timeline) -> str:
    return "".join(_render_node(node, step, timeline) for node in nodes)


def _render_node(node: _Node, step: int, timeline: _Timeline) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, _Edit):
        shown = node.before if step <= timeline.step(node.when) else node.after
    else:
        shown = node.options[(step - 1) % len(node.options)]
    return _render(shown, step, timeline)


def _prompt_schedule(prompt: str, timeline: _Timeline) -> _Schedule:
    nodes = _EditParser(prompt).parse()
    if nodes is None:
        return [[timeline.steps, prompt]]
    return [[step, _render(nodes, step, timeline)] for step in sorted(_change_steps(nodes, timeline))]


def get_learned_conditioning_prompt_schedules(
    prompts: list[str],
    base_steps: int,
    hires_steps: int | None = None,
    use_old_scheduling: bool = False,
) -> list[_Schedule]:
    """For each prompt, [end_step, text] pairs: `text` is the prompt on steps up to and including `end_step`.

    Steps count from 1 over the base pass, or over the hires pass when `hires_steps` is given. Equal
    prompts share one schedule list.

    >>> get_learned_conditioning_prompt_schedules(["a [b:c:3]"], 10)
    [[[3, 'a b'], [10, 'a c']]]
    """
    timeline = _Timeline.create(base_steps, hires_steps, use_old_scheduling)
    schedules = {prompt: _prompt_schedule(prompt, timeline) for prompt in dict.fromkeys(prompts)}
    return [schedules[prompt] for prompt in prompts]
