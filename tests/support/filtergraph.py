"""Read an ffmpeg ``-filter_complex`` string as a graph, so tests can assert on what it does
(which input it decodes, what size each output ends at, which filters every output passes
through) instead of on its exact spelling: an equivalent rewrite of a graph still passes.

Follows ffmpeg's filtergraph syntax as far as tusflow uses it: chains separated by ``;``,
filters by ``,``, ``[label]`` pads before and after a chain, options ``a:b`` or ``k=v:k=v``,
single quotes and backslashes protect separators.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

# Option names of ffmpeg's positional arguments, for the filters tusflow writes.
POSITIONAL = {
    "scale": ("w", "h"),
    "fps": ("fps",),
    "setsar": ("r",),
    "format": ("pix_fmts",),
    "split": ("outputs",),
    "select": ("expr",),
    "thumbnail": ("n",),
    "tile": ("layout",),
    "bwdif": ("mode", "parity", "deint"),
    "trim": ("start", "end"),
}


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside single quotes and not after a backslash."""
    parts, current, quoted, i = [], "", False, 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            current += text[i:i + 2]
            i += 2
            continue
        if ch == "'":
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append(current)
            current = ""
        else:
            current += ch
        i += 1
    parts.append(current)
    return parts


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == "'" else value


@dataclass(frozen=True)
class Filter:
    name: str
    options: dict[str, str]

    @classmethod
    def parse(cls, text: str) -> "Filter":
        name, _, args = text.strip().partition("=")
        options: dict[str, str] = {}
        names = POSITIONAL.get(name, ())
        for index, arg in enumerate(_split(args, ":") if args else []):
            key, eq, value = arg.partition("=")
            # "thumbnail=n=15" names its option; "select='eq(n,0)'" is positional (quoted).
            if eq and key.isidentifier() and not arg.startswith("'"):
                options[key] = _unquote(value)
            else:
                options[names[index] if index < len(names) else str(index)] = _unquote(arg)
        return cls(name, options)

    def size(self) -> tuple[int, int]:
        """The ``scale`` target as integers."""
        assert self.name == "scale", self
        return int(self.options["w"]), int(self.options["h"])

    def rate(self) -> Fraction:
        """The ``fps`` target as a number."""
        assert self.name == "fps", self
        return Fraction(self.options["fps"])


@dataclass
class Chain:
    inputs: list[str]
    filters: list[Filter]
    outputs: list[str]

    @classmethod
    def parse(cls, text: str) -> "Chain":
        text = text.strip()
        inputs: list[str] = []
        while text.startswith("["):
            label, _, text = text[1:].partition("]")
            inputs.append(label)
        outputs: list[str] = []
        while text.endswith("]"):
            text, _, label = text[:-1].rpartition("[")
            outputs.insert(0, label)
        return cls(inputs, [Filter.parse(f) for f in _split(text, ",") if f.strip()], outputs)


@dataclass
class Graph:
    chains: list[Chain] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> "Graph":
        return cls([Chain.parse(c) for c in _split(text, ";") if c.strip()])

    def producer(self, label: str) -> Chain:
        found = [c for c in self.chains if label in c.outputs]
        assert len(found) == 1, f"[{label}] is produced by {len(found)} chains"
        return found[0]

    def produced(self) -> set[str]:
        return {label for c in self.chains for label in c.outputs}

    def consumed(self) -> list[str]:
        return [label for c in self.chains for label in c.inputs]

    def sources(self) -> list[str]:
        """Input pads that no chain produces: streams of the ffmpeg inputs (``0:0``)."""
        return [label for label in self.consumed() if label not in self.produced()]

    def outputs(self) -> set[str]:
        """Pads no chain consumes: what ``-map`` must take."""
        return self.produced() - set(self.consumed())

    def path(self, label: str) -> tuple[str, list[Filter]]:
        """The input stream ``label`` comes from and every filter on the way, in order."""
        chain = self.producer(label)
        assert len(chain.inputs) == 1, f"[{label}]: chains with {len(chain.inputs)} inputs"
        source = chain.inputs[0]
        if source in self.produced():
            origin, before = self.path(source)
            return origin, before + chain.filters
        return source, list(chain.filters)

    def check(self) -> None:
        """What ffmpeg refuses: a pad used twice or never made, a split with the wrong count."""
        consumed = self.consumed()
        assert len(consumed) == len(set(consumed)), f"a pad is read twice: {consumed}"
        made = [label for c in self.chains for label in c.outputs]
        assert len(made) == len(set(made)), f"a pad is made twice: {made}"
        for chain in self.chains:
            if chain.filters and chain.filters[-1].name == "split":
                assert int(chain.filters[-1].options.get("outputs", "2")) == len(chain.outputs), chain
            else:
                assert len(chain.outputs) == 1, chain
            assert "split" not in names(chain.filters[:-1]), f"a split inside {chain}"

    def filters(self, name: str) -> list[Filter]:
        return [f for c in self.chains for f in c.filters if f.name == name]


def last(filters: list[Filter], name: str) -> Filter:
    found = [f for f in filters if f.name == name]
    assert found, f"no {name} in {[f.name for f in filters]}"
    return found[-1]


def names(filters: list[Filter]) -> list[str]:
    return [f.name for f in filters]
