"""dlib's face descriptor network run by numpy: its weights read from dlib's own file, its forward pass as
im2col + matrix products on numpy's BLAS.

The network is the one of dlib's ``face_recognition_model_v1`` (a ResNet of 29 convolutions over a 150x150
aligned chip, 128 outputs). ``read_dlib_network`` reads ``dlib_face_recognition_resnet_model_v1.dat`` in dlib's
serialization format (variable-length integers, floats as mantissa and exponent, tensors as raw little-endian
float32), checking every layer against that definition: any other file is a one-line error. Batch norm layers
stored in the file become per-channel affine transforms, as dlib does when it loads them for inference.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import LookalikeError

CHIP_SIZE = 150
DESCRIPTOR_SIZE = 128
CONVERTED_FORMAT = 1  # of the arrays ``convert`` makes: a change makes earlier converted files be made again


def _block(filters: int, stride: int) -> list[tuple]:
    """dlib's ``block``: con (stride), affine, relu, con, affine (in the order they run)."""
    return [("con", filters, 3, stride), ("affine",), ("relu",), ("con", filters, 3, 1), ("affine",)]


def _residual(filters: int) -> list[tuple]:
    """dlib's ``ares``: the block's output plus its input, then relu."""
    return [("tag", 1), *_block(filters, 1), ("add_prev", 1), ("relu",)]


def _residual_down(filters: int) -> list[tuple]:
    """dlib's ``ares_down``: the block (stride 2) plus its input average-pooled by 2, then relu."""
    return [("tag", 1), *_block(filters, 2), ("tag", 2), ("skip", 1), ("avg_pool", 2, 2), ("add_prev", 2),
            ("relu",)]


# face_recognition_model_v1's anet_type, from the input to the output (the file stores it from the loss inward).
LAYERS: tuple[tuple, ...] = (
    ("con", 32, 7, 2), ("affine",), ("relu",), ("max_pool", 3, 2),
    *_residual(32) * 3,
    *_residual_down(64), *_residual(64) * 3,
    *_residual_down(128), *_residual(128) * 2,
    *_residual_down(256), *_residual(256) * 2,
    *_residual_down(256),
    ("avg_pool_everything",), ("fc", DESCRIPTOR_SIZE),
)


class _Reader:
    """dlib's serialization format, read from bytes (dlib/serialize.h)."""

    def __init__(self, data: bytes):
        self.data = data
        self.at = 0

    def fail(self, what: str) -> LookalikeError:
        return LookalikeError(f"not dlib's face recognition network: {what} at byte {self.at}")

    def take(self, count: int) -> bytes:
        if self.at + count > len(self.data):
            raise self.fail("the file ends early")
        chunk = self.data[self.at:self.at + count]
        self.at += count
        return chunk

    def int(self) -> int:
        """An integer: a control byte (sign in bit 7, byte count in the low 4 bits), then little-endian bytes."""
        control = self.take(1)[0]
        size = control & 0x0F
        if size == 0 or size > 8 or control & 0x70:
            raise self.fail("a malformed integer")
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def float(self) -> float:
        """A float: mantissa and exponent, both integers (value = mantissa * 2**exponent)."""
        mantissa, exponent = self.int(), self.int()
        if exponent >= 32000:
            raise self.fail("an infinite or NaN parameter")
        return float(np.ldexp(np.float64(mantissa), exponent))

    def bool(self) -> bool:
        value = self.take(1)
        if value not in (b"0", b"1"):
            raise self.fail("a malformed boolean")
        return value == b"1"

    def string(self) -> str:
        size = self.int()
        if not 0 <= size <= 64:
            raise self.fail("an unexpected string")
        return self.take(size).decode("latin-1")

    def expect(self, value: int, what: str) -> None:
        found = self.int()
        if found != value:
            raise self.fail(f"{what} {found} where {value} was expected")

    def expect_string(self, *choices: str) -> str:
        found = self.string()
        if found not in choices:
            raise self.fail(f"layer {found!r} where {' or '.join(map(repr, choices))} was expected")
        return found

    def tensor(self) -> np.ndarray:
        """A resizable_tensor: version 2, four dimensions, then raw little-endian float32."""
        self.expect(2, "tensor version")
        shape = tuple(self.int() for _ in range(4))
        if min(shape) < 0 or np.prod(shape, dtype=np.int64) > 1 << 24:
            raise self.fail(f"a tensor of shape {shape}")
        count = int(np.prod(shape, dtype=np.int64))
        values = np.frombuffer(self.take(4 * count), dtype="<f4").astype(np.float32)
        if not np.isfinite(values).all():
            raise self.fail("an infinite or NaN parameter")
        return values.reshape(shape)

    def alias_tensor(self) -> tuple[int, ...]:
        self.expect(1, "alias tensor version")
        return tuple(self.int() for _ in range(4))


@dataclass(frozen=True)
class Network:
    """The weights of the network as dlib holds them, one entry per layer of ``LAYERS``: for a con a (filters,
    channels, rows, columns) array and a bias per filter, for an affine a scale and a shift per channel, for
    the fc an (inputs, outputs) matrix, nothing for the others; and the channel means subtracted from the
    input pixels."""

    input_means: np.ndarray
    params: tuple[tuple[np.ndarray, ...], ...]


def _read_con(reader: _Reader, filters: int, size: int, stride: int, channels: int) -> tuple[np.ndarray, ...]:
    version = reader.expect_string("con_4", "con_5", "con_6")
    params = reader.tensor()
    reader.expect(filters, "con filters")
    reader.expect(size, "con rows")
    reader.expect(size, "con columns")
    reader.expect(stride, "con stride y")
    reader.expect(stride, "con stride x")
    padding = size // 2 if stride == 1 else 0
    reader.expect(padding, "con padding y")
    reader.expect(padding, "con padding x")
    if reader.alias_tensor() != (filters, channels, size, size) or reader.alias_tensor() != (1, filters, 1, 1):
        raise reader.fail("con weights of another shape")
    for _ in range(4):  # learning rate and weight decay multipliers
        reader.float()
    if version in ("con_5", "con_6") and not reader.bool():
        raise reader.fail("a con without bias")
    if version == "con_6" and reader.bool():
        raise reader.fail("a con with a fused relu")
    weights_size = filters * channels * size * size
    flat = params.reshape(-1)
    if flat.size != weights_size + filters:
        raise reader.fail("con parameters of another size")
    return flat[:weights_size].reshape(filters, channels, size, size), flat[weights_size:]


def _read_affine(reader: _Reader, channels: int) -> tuple[np.ndarray, ...]:
    """An affine layer, or a batch norm turned into one as dlib's affine_(bn_) does (in float32)."""
    version = reader.expect_string("bn_con2", "affine_", "affine_2")
    params = reader.tensor().reshape(-1)
    if reader.alias_tensor() != (1, channels, 1, 1) or reader.alias_tensor() != (1, channels, 1, 1) \
            or params.size != 2 * channels:
        raise reader.fail("affine parameters of another shape")
    gamma, beta = params[:channels], params[channels:]
    if version == "bn_con2":
        reader.tensor(), reader.tensor()  # the means and inverse deviations of the last training batch
        running_means, running_variances = reader.tensor().reshape(-1), reader.tensor().reshape(-1)
        if running_means.size != channels or running_variances.size != channels:
            raise reader.fail("batch norm statistics of another shape")
        reader.int(), reader.int()  # updates and window of the running statistics
        for _ in range(4):  # learning rate and weight decay multipliers
            reader.float()
        eps = np.float32(reader.float())
        scale = gamma / np.sqrt(running_variances + eps)
        return scale, beta - scale * running_means
    reader.expect(0, "affine mode (0: per channel)")
    if version == "affine_2" and reader.bool():
        raise reader.fail("a disabled affine layer")
    return gamma, beta


def _read_pool(reader: _Reader, version: str, size: int, stride: int) -> None:
    reader.expect_string(version)
    for what, value in (("rows", size), ("columns", size), ("stride y", stride), ("stride x", stride),
                        ("padding y", 0), ("padding x", 0)):
        reader.expect(value, f"pool {what}")


def _read_fc(reader: _Reader, outputs: int, inputs: int) -> tuple[np.ndarray, ...]:
    version = reader.expect_string("fc_2", "fc_3")
    reader.expect(outputs, "fc outputs")
    reader.expect(inputs, "fc inputs")
    params = reader.tensor().reshape(-1)
    if reader.alias_tensor() != (inputs, outputs, 1, 1) or params.size != inputs * outputs:
        raise reader.fail("fc weights of another shape")
    reader.alias_tensor()  # biases: none in fc_no_bias
    reader.expect(1, "fc bias mode (1: no bias)")
    for _ in range(4):
        reader.float()
    if version == "fc_3":
        reader.bool()
    return (params.reshape(inputs, outputs),)


def _read_layer(reader: _Reader, layer: tuple, channels: int) -> tuple[np.ndarray, ...]:
    kind = layer[0]
    if kind == "con":
        return _read_con(reader, layer[1], layer[2], layer[3], channels)
    if kind == "affine":
        return _read_affine(reader, channels)
    if kind == "relu":
        if reader.expect_string("relu_", "relu_2") == "relu_2" and reader.bool():
            raise reader.fail("a disabled relu")
    elif kind == "max_pool":
        _read_pool(reader, "max_pool_2", layer[1], layer[2])
    elif kind == "avg_pool":
        _read_pool(reader, "avg_pool_2", layer[1], layer[2])
    elif kind == "avg_pool_everything":
        _read_pool(reader, "avg_pool_2", 0, 1)
    elif kind == "add_prev":
        reader.expect_string("add_prev_")
    elif kind == "fc":
        return _read_fc(reader, layer[1], channels)
    return ()


def _skip_layer_state(reader: _Reader, version: int, first: bool) -> None:
    """What dlib's add_layer keeps after a layer's details: flags, and tensors of training (empty or not)."""
    for _ in range(3):
        reader.bool()
    reader.tensor(), reader.tensor()  # gradient input, cached output
    if first:
        reader.tensor()  # final gradient
        if version >= 3:
            reader.int()  # sample expansion factor
    elif version >= 2:
        reader.tensor()  # parameter gradients


def _output_channels(layer: tuple, channels: int, tagged: dict[int, int]) -> int:
    kind = layer[0]
    if kind in ("con", "fc"):
        return layer[1]
    if kind == "tag":
        tagged[layer[1]] = channels
    elif kind == "skip":
        return tagged[layer[1]]
    elif kind == "add_prev":
        return max(channels, tagged[layer[1]])
    return channels


def read_dlib_network(data: bytes) -> Network:
    """The weights of dlib's face recognition network from the bytes of its ``.dat`` file; a
    LookalikeError (one line) when the bytes are anything else."""
    reader = _Reader(data)
    reader.expect(1, "loss layer version")
    if reader.expect_string("loss_metric_", "loss_metric_2") == "loss_metric_2":
        reader.float(), reader.float()  # margin and distance threshold of training
    versions = {}
    for position in range(len(LAYERS) - 1, -1, -1):  # each layer wraps the ones before it
        kind = LAYERS[position][0]
        versions[position] = reader.int()
        accepted = (1,) if kind in ("tag", "skip") else (2, 3) if position == 0 else (1, 2)
        if versions[position] not in accepted:
            raise reader.fail(f"{kind} layer version {versions[position]}")
    reader.expect_string("input_rgb_image_sized")
    input_means = np.array([reader.float() for _ in range(3)], dtype=np.float32)
    reader.expect(CHIP_SIZE, "input rows")
    reader.expect(CHIP_SIZE, "input columns")
    params = []
    channels, tagged = 3, {}
    for position, layer in enumerate(LAYERS):
        if layer[0] in ("tag", "skip"):
            params.append(())
        else:
            params.append(_read_layer(reader, layer, channels))
            _skip_layer_state(reader, versions[position], position == 0)
        channels = _output_channels(layer, channels, tagged)
    if reader.at != len(data):
        raise reader.fail("more data after the network")
    return Network(input_means=input_means, params=tuple(params))


def _steps() -> list[tuple]:
    """``LAYERS`` as they run here: a con with the affine after it, and the relu after that if any, is one
    ("conv", size, stride, relu) step."""
    steps, position = [], 0
    while position < len(LAYERS):
        layer = LAYERS[position]
        if layer[0] == "con":
            relu = LAYERS[position + 2][0] == "relu"
            steps.append(("conv", layer[2], layer[3], relu))
            position += 3 if relu else 2
        else:
            steps.append(layer)
            position += 1
    return steps


def convert(network: Network) -> dict[str, np.ndarray]:
    """The arrays ``ResNet`` runs on: every con's filters as one (rows * columns * channels, filters) matrix
    for im2col, with the affine after it folded into filters and bias."""
    arrays = {"input_means": network.input_means}
    convs = 0
    for position, layer in enumerate(LAYERS):
        if layer[0] == "con":
            filters, bias = network.params[position]
            scale, shift = network.params[position + 1]
            folded = filters * scale[:, None, None, None]
            arrays[f"conv{convs}.weights"] = np.ascontiguousarray(
                folded.transpose(2, 3, 1, 0).reshape(-1, filters.shape[0]))
            arrays[f"conv{convs}.bias"] = bias * scale + shift
            convs += 1
        elif layer[0] == "fc":
            arrays["fc.weights"] = network.params[position][0]
    return arrays


def _expected_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {"input_means": (3,)}
    channels, tagged, convs = 3, {}, 0
    for layer in LAYERS:
        if layer[0] == "con":
            shapes[f"conv{convs}.weights"] = (layer[2] * layer[2] * channels, layer[1])
            shapes[f"conv{convs}.bias"] = (layer[1],)
            convs += 1
        elif layer[0] == "fc":
            shapes["fc.weights"] = (channels, layer[1])
        channels = _output_channels(layer, channels, tagged)
    return shapes


def _conv(x: np.ndarray, weights: np.ndarray, bias: np.ndarray, size: int, stride: int, relu: bool) -> np.ndarray:
    """A convolution of NHWC ``x`` as one matrix product: each output pixel's window (rows of size *
    channels contiguous values, taken as one strided view) against the filters."""
    if stride == 1:
        pad = size // 2
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    count, height, width, channels = x.shape
    rows = np.lib.stride_tricks.sliding_window_view(x.reshape(count, height, width * channels),
                                                    (size, size * channels), axis=(1, 2))
    windows = rows[:, ::stride, ::stride * channels]
    out = windows.reshape(-1, size * size * channels) @ weights
    out += bias
    if relu:
        np.maximum(out, 0, out=out)
    return out.reshape(count, windows.shape[1], windows.shape[2], -1)


def _pool(x: np.ndarray, size: int, stride: int, combine) -> np.ndarray:
    """Max or sum pooling without padding: the windows' values combined in row-major order, as dlib does."""
    count, height, width, channels = x.shape
    rows, columns = (height - size) // stride + 1, (width - size) // stride + 1
    out = None
    for dy in range(size):
        for dx in range(size):
            part = x[:, dy:dy + stride * (rows - 1) + 1:stride, dx:dx + stride * (columns - 1) + 1:stride]
            out = part.copy() if out is None else combine(out, part, out=out)
    return out


def _add_padded(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """dlib's add_prev: the sum over the larger shape, each input zero outside its own extent."""
    if a.shape == b.shape:
        return a + b
    out = np.zeros(np.maximum(a.shape, b.shape), dtype=np.float32)
    out[tuple(map(slice, a.shape))] += a
    out[tuple(map(slice, b.shape))] += b
    return out


_blas = None


def _one_blas_thread():
    """numpy's BLAS limited to one thread while the network runs: parallelism comes from worker processes."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController

        _blas = ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas")


class ResNet:
    """The network ready to run on the arrays of ``convert``; ``descriptors`` of a batch of chips."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        for name, shape in _expected_shapes().items():
            if name not in arrays or arrays[name].shape != shape or arrays[name].dtype != np.float32:
                raise ValueError(f"converted network: {name} missing or not float32 {shape}")
        self.input_means = arrays["input_means"]
        self.steps: list[tuple] = []
        convs = 0
        for step in _steps():
            if step[0] == "conv":
                self.steps.append((step[0], arrays[f"conv{convs}.weights"], arrays[f"conv{convs}.bias"], *step[1:]))
                convs += 1
            elif step[0] == "fc":
                self.steps.append((step[0], arrays["fc.weights"]))
            else:
                self.steps.append(step)

    def descriptors(self, chips: np.ndarray) -> np.ndarray:
        """(N, 128) float32 descriptors of N aligned RGB chips, (N, 150, 150, 3) uint8, run as one batch.

        The same chips in the same batch give the same bits on the same BLAS kernels. In another batch a chip's
        descriptor may differ in its last bits, far within models.EQUIVALENCE_TOLERANCE (2.4e-7 between batches
        of 8 and 3 on OpenBLAS's Haswell kernels): BLAS chooses how to sum a matrix product by its shape, and
        the batch's size is part of that shape. Running each chip alone would make the batch irrelevant, but
        costs a fifth more time for 10 jittered copies."""
        if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise ValueError(f"chips must be (N, {CHIP_SIZE}, {CHIP_SIZE}, 3), got {chips.shape}")
        x = (chips.astype(np.float32) - self.input_means) / np.float32(256)
        tagged: dict[int, np.ndarray] = {}
        with _one_blas_thread():
            for step in self.steps:
                kind = step[0]
                if kind == "conv":
                    x = _conv(x, *step[1:])
                elif kind == "relu":
                    x = np.maximum(x, 0)
                elif kind == "max_pool":
                    x = _pool(x, step[1], step[2], np.maximum)
                elif kind == "avg_pool":
                    x = _pool(x, step[1], step[2], np.add) / np.float32(step[1] * step[1])
                elif kind == "tag":
                    tagged[step[1]] = x
                elif kind == "skip":
                    x = tagged[step[1]]
                elif kind == "add_prev":
                    x = _add_padded(x, tagged[step[1]])
                elif kind == "avg_pool_everything":
                    x = x.mean(axis=(1, 2))
                elif kind == "fc":
                    x = x @ step[1]
        return x


def converted_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """The arrays of ``convert`` as an uncompressed .npz file (plain arrays, no pickled objects)."""
    buffer = io.BytesIO()
    np.savez(buffer, converted_format=np.array(CONVERTED_FORMAT), **arrays)
    return buffer.getvalue()


def load_converted(path: Path) -> ResNet:
    """The network from a file of ``converted_bytes``; ValueError or OSError if it is not one of this format."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if "converted_format" not in data.files or int(data["converted_format"]) != CONVERTED_FORMAT:
                raise ValueError(f"{path} is not a converted network of format {CONVERTED_FORMAT}")
            return ResNet({name: data[name] for name in data.files if name != "converted_format"})
    except (zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{path} is damaged: {exc}") from None
