"""Layer specs: the ordered prunable layers of a model, read by merging, pruning and cost accounting."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class LayerSpec:
    """One prunable layer of a single-task network and the geometry around it."""

    name: str
    kind: str  # "conv" or "linear"
    width: int  # output neurons (conv filters / linear units) of one single-task network
    kernel: int = 1  # conv kernel size (square); 1 for linear
    padding: int = 0  # conv zero padding on each side
    pool: int = 1  # max-pool size applied after the ReLU (1 = none)
    in_hw: tuple[int, int] = (1, 1)  # input spatial size (conv); (1, 1) for linear
    out_hw: tuple[int, int] = (1, 1)  # conv output size before pooling: the H x W of the cost rule
    flatten_from: tuple[int, int] = (1, 1)  # for a linear after a conv: spatial size of each input channel

    @property
    def positions(self) -> int:
        """Output positions per neuron (H*W for conv, 1 for linear)."""
        return self.out_hw[0] * self.out_hw[1]

    @property
    def fan_per_input(self) -> int:
        """Weights per (neuron, input channel) pair: k*k for conv, the flattened spatial size for linear."""
        if self.kind == "conv":
            return self.kernel * self.kernel
        return self.flatten_from[0] * self.flatten_from[1]

    @property
    def pooled_hw(self) -> tuple[int, int]:
        """Spatial size after pooling."""
        return (self.out_hw[0] // self.pool, self.out_hw[1] // self.pool)


@dataclass(frozen=True)
class ModelSpec:
    """A model: input shape, hidden layers in order, and the head geometry (a linear layer per task)."""

    name: str
    in_channels: int
    in_hw: tuple[int, int]
    layers: tuple[LayerSpec, ...]
    head: LayerSpec  # width 0: the head's width is the task's number of outputs

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for checkpoints and results)."""
        return {"name": self.name, "in_channels": self.in_channels, "in_hw": list(self.in_hw),
                "layers": [_layer_dict(la) for la in self.layers], "head": _layer_dict(self.head)}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> ModelSpec:
        """Inverse of to_dict."""
        return ModelSpec(d["name"], d["in_channels"], tuple(d["in_hw"]),
                         tuple(_layer_from(x) for x in d["layers"]), _layer_from(d["head"]))

    def single_task_weights(self, n_outputs: int) -> int:
        """Conv + linear weights (no biases) of one single-task network with n_outputs head units."""
        total, prev = 0, self.in_channels
        for la in (*self.layers, self.head):
            width = n_outputs if la is self.head else la.width
            total += prev * la.fan_per_input * width
            prev = width
        return total


def _layer_dict(la: LayerSpec) -> dict[str, Any]:
    """LayerSpec to plain data."""
    d = asdict(la)
    for k in ("in_hw", "out_hw", "flatten_from"):
        d[k] = list(d[k])
    return d


def _layer_from(d: dict[str, Any]) -> LayerSpec:
    """Plain data to LayerSpec."""
    return LayerSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _conv_padding(padding: str | int, kernel: int, size: int) -> int:
    """Resolve a padding setting: an int, 'valid', 'same', or 'auto' (valid unless the input is under 2*kernel)."""
    if isinstance(padding, int):
        return padding
    if padding == "valid":
        return 0
    if padding == "same":
        return kernel // 2
    if padding == "auto":
        return 0 if size >= 2 * kernel else kernel // 2
    raise ValueError(f"model.layers.padding must be an int, 'valid', 'same' or 'auto', got {padding!r}")


def build_spec(name: str, layers: list[dict[str, Any]], in_channels: int = 1,
               in_hw: tuple[int, int] | list[int] = (28, 28)) -> ModelSpec:
    """Build a ModelSpec from the config's layer list for a given input shape."""
    specs: list[LayerSpec] = []
    h, w = int(in_hw[0]), int(in_hw[1])
    for i, raw in enumerate(layers):
        kind = raw["kind"]
        lname = raw.get("name", f"{kind}{i + 1}")
        if kind == "conv":
            k = int(raw["kernel"])
            pad = _conv_padding(raw.get("padding", "auto"), k, min(h, w))
            oh, ow = h + 2 * pad - k + 1, w + 2 * pad - k + 1
            if oh < 1 or ow < 1:
                raise ValueError(f"model {name}: layer {lname} gets a {h}x{w} input, too small for a {k}x{k} kernel")
            pool = int(raw.get("pool", 1))
            pool = pool if min(oh, ow) >= pool else 1  # tiny inputs skip pooling rather than vanish
            specs.append(LayerSpec(lname, "conv", int(raw["width"]), k, pad, pool, (h, w), (oh, ow)))
            h, w = oh // pool, ow // pool
        elif kind == "linear":
            specs.append(LayerSpec(lname, "linear", int(raw["width"]), flatten_from=(h, w)))
            h, w = 1, 1
        else:
            raise ValueError(f"model {name}: layer kind must be 'conv' or 'linear', got {kind!r}")
    head = LayerSpec("head", "linear", 0, flatten_from=(h, w))
    return ModelSpec(name, in_channels, (int(in_hw[0]), int(in_hw[1])), tuple(specs), head)
