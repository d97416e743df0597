"""A1111's extra-network tags in prompts, as stable-diffusion-webui v1.10.1 reads them.

A tag is `<type:arg1:arg2:...>`: a type made of word characters (letters, digits, `_`), a colon, then
one or more characters other than `>`, split on every `:` into the arguments:

    <lora:name:0.8>             lora, items ["name", "0.8"]
    <lora:name:0.8:0.5>         lora, items ["name", "0.8", "0.5"]: text encoder 0.8, UNet 0.5
    <lora:name:unet=0.5:te=1>   lora, positional ["name"], named {"unet": "0.5", "te": "1"}
    <hypernet:x:1>              hypernet, items ["x", "1"]

An argument with exactly one `=` is named (`key=value`); anything else, `a=b=c` included, is positional.
Nothing is stripped or converted: `<lora:my lora: 0.8>` has items ["my lora", " 0.8"].

`parse_prompt` removes each tag and only the tag: the spaces and commas around it stay, so
"a, <lora:x:1>, b" becomes "a, , b". Text that is not a whole tag (`<lora>`, `<lora:>`, `<lora:x`, a type
with a space or a dash in it) stays in the prompt as written. A tag may span lines, since its arguments
may hold any character but `>`.

`lora_multipliers` reads a `lora` tag's arguments the way A1111's built-in Lora extension does
(v1.10.1 `extensions-builtin/Lora/extra_networks_lora.py`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

EXTRA_NETWORK_TAG = re.compile(r"<(\w+):([^>]+)>")


class ExtraNetworkParams:
    """The arguments of one tag: `items` all of them, split into `positional` and `named` (`key=value`).

    An item that is not a string (A1111 adds the default multiplier as a float) is positional.
    Two params are equal when their items are.
    """

    def __init__(self, items: list[Any] | None = None) -> None:
        self.items: list[Any] = items or []
        self.positional: list[Any] = []
        self.named: dict[str, str] = {}
        for item in self.items:
            parts = item.split("=", 2) if isinstance(item, str) else [item]
            if len(parts) == 2:
                self.named[parts[0]] = parts[1]
            else:
                self.positional.append(item)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ExtraNetworkParams):
            return NotImplemented
        return self.items == other.items

    def __repr__(self) -> str:
        return f"ExtraNetworkParams(items={self.items!r})"


def parse_prompt(prompt: str) -> tuple[str, defaultdict[str, list[ExtraNetworkParams]]]:
    """The prompt without its tags, and each tag type's params in the order the tags appear."""
    networks: defaultdict[str, list[ExtraNetworkParams]] = defaultdict(list)

    def remove(match: re.Match[str]) -> str:
        networks[match.group(1)].append(ExtraNetworkParams(items=match.group(2).split(":")))
        return ""

    return EXTRA_NETWORK_TAG.sub(remove, prompt), networks


def parse_prompts(
    prompts: Iterable[str],
) -> tuple[list[str], defaultdict[str, list[ExtraNetworkParams]] | None]:
    """Every prompt without its tags, and the tags of the first prompt only (None for no prompts).

    As in A1111, the tags of a batch's other prompts are removed but not returned: a batch shares the first
    prompt's extra networks.
    """
    stripped: list[str] = []
    first_networks: defaultdict[str, list[ExtraNetworkParams]] | None = None
    for prompt in prompts:
        text, networks = parse_prompt(prompt)
        if first_networks is None:
            first_networks = networks
        stripped.append(text)
    return stripped, first_networks


def lora_multipliers(params: ExtraNetworkParams) -> tuple[str, float, float]:
    """(name, text encoder multiplier, UNet multiplier) of a `lora` tag, by A1111's Lora extension rule.

    name: the first positional argument (so `<lora:te=0.5:name>` names "name").
    te:   named `te`, else the second positional argument, else 1.0.
    unet: named `unet`, else the third positional argument, else te (after `te=` is applied).

    A1111 also reads a DyLoRA dimension, the fourth positional argument or named `dyn`; it is not read
    here, so it is neither returned nor checked. Other named arguments are ignored, as in A1111.
    A tag with no positional argument raises ValueError (A1111 fails with IndexError and skips its LoRAs),
    and a multiplier that `float` cannot read raises ValueError, as in A1111.
    """
    if not params.positional:
        raise ValueError(f"lora tag with no name: {params.items!r}")
    name = params.positional[0]
    te = float(params.positional[1]) if len(params.positional) > 1 else 1.0
    te = float(params.named.get("te", te))
    unet = float(params.positional[2]) if len(params.positional) > 2 else te
    unet = float(params.named.get("unet", unet))
    return str(name), te, unet
