"""Descriptors by dlib against dlib's network run by numpy (`runtime.descriptor_backend`): per chip and per face
with 10 jitters on one thread, then `lookalike build` and `lookalike serve` with each backend, with the peak memory
of their worker processes. onnxruntime runs the same network too when `onnx` and `onnxruntime` are installed
(`pip install '.[bench]'`): the alternative runtime the numpy backend was chosen over.

    .venv/bin/python benchmarks/bench_descriptor.py          # quick: 3 rounds of descriptors, 1 build each
    .venv/bin/python benchmarks/bench_descriptor.py --full   # 5 rounds, 2 builds each, longer serve load

Descriptor timings run in child processes (OPENBLAS_NUM_THREADS=1), the installed dlib in one and, when `make
dlib-blas-wheel` has made it, the OpenBLAS build of dlib in another; rounds alternate the children and the
table holds medians of the rounds' medians. Builds and servers are the real commands, taking turns per round.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench_dlib import blas_site
from bench_serve import demo_gallery, load
from common import (CONGRESS, FACES, REPO, header, load_average, markdown_table, median, ms, repeat_timed,
                    require_shared, shared_photos, write_report)

PHOTO = "people/barack_obama/1.jpg"
BACKENDS = ("dlib", "numpy")
BUILD_PHOTOS = 200


def onnx_session(network):
    """The numpy backend's network (folded convolutions) as an onnxruntime session on one thread, or None when
    onnx or onnxruntime is not installed."""
    try:
        import onnxruntime
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    nodes, weights = [], []

    def node(op: str, inputs: list[str], **attributes) -> str:
        name = f"{op}{len(nodes)}"
        nodes.append(helper.make_node(op, inputs, [name], **attributes))
        return name

    def constant(array: np.ndarray) -> str:
        name = f"w{len(weights)}"
        weights.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    x = node("Cast", ["chips"], to=TensorProto.FLOAT)
    x = node("Div", [node("Sub", [x, constant(network.input_means)]), constant(np.float32(256))])
    x = node("Transpose", [x], perm=[0, 3, 1, 2])
    shape, tagged = (3, 150, 150), {}

    def padded(name: str, have: tuple, want: tuple) -> str:
        if have == want:
            return name
        pads = [0, 0, 0, 0, 0] + [w - h for w, h in zip(want, have)]
        return node("Pad", [name, constant(np.array(pads, dtype=np.int64))])

    for step in network.steps:
        kind = step[0]
        if kind == "conv":
            _, matrix, bias, size, stride, relu = step
            channels = matrix.shape[0] // (size * size)
            filters = matrix.reshape(size, size, channels, -1).transpose(3, 2, 0, 1)
            pad = size // 2 if stride == 1 else 0
            x = node("Conv", [x, constant(filters), constant(bias)], kernel_shape=[size, size],
                     strides=[stride, stride], pads=[pad] * 4)
            x = node("Relu", [x]) if relu else x
            side = (shape[1] + 2 * pad - size) // stride + 1
            shape = (filters.shape[0], side, side)
        elif kind == "tag":
            tagged[step[1]] = (x, shape)
        elif kind == "skip":
            x, shape = tagged[step[1]]
        elif kind == "relu":
            x = node("Relu", [x])
        elif kind in ("max_pool", "avg_pool"):
            x = node("MaxPool" if kind == "max_pool" else "AveragePool", [x], kernel_shape=[step[1]] * 2,
                     strides=[step[2]] * 2)
            side = (shape[1] - step[1]) // step[2] + 1
            shape = (shape[0], side, side)
        elif kind == "add_prev":
            other, other_shape = tagged[step[1]]
            both = tuple(max(a, b) for a, b in zip(shape, other_shape))
            x, shape = node("Add", [padded(x, shape, both), padded(other, other_shape, both)]), both
        elif kind == "avg_pool_everything":
            x = node("Flatten", [node("GlobalAveragePool", [x])])
        elif kind == "fc":
            x = node("MatMul", [x, constant(step[1])])
    graph = helper.make_graph(nodes, "dlib_resnet", [helper.make_tensor_value_info("chips", TensorProto.UINT8,
                                                                                   ["n", 150, 150, 3])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["n", 128])], weights)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def child(photo: str, repeats: int, with_numpy: bool) -> dict:
    """Medians of this process's descriptor paths (printed as JSON by the child)."""
    from common import dlib_build
    from lookalike_cli.config import ImageConfig
    from lookalike_cli.imaging.decode import read_image
    from lookalike_cli.face.descriptors import jittered_chips
    from lookalike_cli.face.models import FaceModels

    models = FaceModels()
    image = read_image(photo, ImageConfig()).pixels
    face = models.detect(image, 1)[0]
    dlib = models._dlib
    shape = dlib.full_object_detection(dlib.rectangle(*face.box),
                                       [dlib.point(int(x), int(y)) for x, y in face.landmarks])
    chip = models.chip(image, face)
    paths = {
        "dlib": {"1 chip": lambda: models.encoder.compute_face_descriptor(chip, 0),
                 "1 face, num_jitters 1": lambda: models.encoder.compute_face_descriptor(image, shape, 1),
                 "1 face, num_jitters 10": lambda: models.encoder.compute_face_descriptor(image, shape, 10)}}
    if with_numpy:
        paths["numpy"] = {"1 chip": lambda: models.network.descriptors(chip[None]),
                          "1 face, num_jitters 1": lambda: models.descriptor(image, face, 1, "numpy"),
                          "1 face, num_jitters 10": lambda: models.descriptor(image, face, 10, "numpy")}
        session = onnx_session(models.network)
        if session is not None:
            def onnx_descriptor(chips: np.ndarray) -> np.ndarray:
                return session.run(None, {"chips": chips})[0].mean(axis=0)

            paths["onnxruntime"] = {
                "1 chip": lambda: onnx_descriptor(chip[None]),
                "1 face, num_jitters 1": lambda: onnx_descriptor(models.chip(image, face)[None]),
                "1 face, num_jitters 10": lambda: onnx_descriptor(jittered_chips(models.chip(image, face), 10))}
    result = {"build": dlib_build(), "times": {}}
    for backend, calls in paths.items():
        for path, call in calls.items():
            call()  # warm-up (and the numpy network's load)
            result["times"][f"{backend}|{path}"] = median(repeat_timed(call, repeats if "10" not in path else 2))
    if "onnxruntime" in paths:
        dlib_chip = np.asarray(models.encoder.compute_face_descriptor(chip, 0))
        result["onnxruntime_l2"] = float(np.linalg.norm(paths["onnxruntime"]["1 chip"]() - dlib_chip))
    return result


def run_child(site: Path | None, photo: str, repeats: int) -> dict:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, __file__, "--child", photo, str(repeats), str(site is None)], env=env,
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def descriptor_table(rounds: int, repeats: int) -> list[str]:
    sites = {"installed": None}
    if blas_site() is not None:
        sites["OpenBLAS dlib"] = blas_site()
    runs: dict[str, list[dict]] = {name: [] for name in sites}
    for _ in range(rounds):
        for name, site in sites.items():
            runs[name].append(run_child(site, str(FACES / PHOTO), repeats))
    columns = {}
    for name, results in runs.items():
        for key in results[0]["times"]:
            backend, path = key.split("|")
            label = results[0]["build"] if backend == "dlib" else backend
            label = label if name == "installed" else f"OpenBLAS {label}"
            columns.setdefault(label, {})[path] = median([result["times"][key] for result in results])
    base = next(iter(columns))
    paths = list(columns[base])
    headers = ["descriptor", *(f"{label}, ms" for label in columns),
               *(f"{label} vs installed dlib" for label in list(columns)[1:])]
    rows = [[path, *(ms(columns[label][path]) for label in columns),
             *(f"{columns[base][path] / columns[label][path]:.1f}x" for label in list(columns)[1:])]
            for path in paths]
    notes = []
    if "onnxruntime_l2" in runs["installed"][0]:
        notes.append(f"onnxruntime's descriptor of the chip differs from dlib's by L2 "
                     f"{runs['installed'][0]['onnxruntime_l2']:.1e}.")
    else:
        notes.append("onnxruntime: not installed (`pip install onnx onnxruntime` adds its column).")
    if len(sites) == 1:
        notes.append("No OpenBLAS dlib wheel: `make dlib-blas-wheel` builds it (15-25 min on 2 cores).")
    return [f"Photo: faces/{PHOTO}; one thread each; median of {rounds} rounds of {repeats} calls (2 for 10 "
            "jitters). 1 chip: the network alone on the aligned 150x150 chip; 1 face: chip extraction, jittered "
            "copies (dlib's own for dlib, the seeded ones of `jittered_chips` for numpy and onnxruntime) and their "
            "mean.\n", markdown_table(headers, rows), "", *notes]


def descendants_peak(root: int, stop: threading.Event, peaks: dict[int, tuple[int, int]]) -> None:
    """Until ``stop``: the peak resident memory (VmHWM, kB) and the depth below ``root`` of each process under
    it, polled every 0.2 s."""
    while not stop.is_set():
        parents = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                parents[int(stat.parent.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
        for pid in parents:
            depth, ancestor = 0, pid
            while ancestor in parents and ancestor != root:
                ancestor, depth = parents[ancestor], depth + 1
            if ancestor != root:
                continue
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peaks[pid] = (max(peaks.get(pid, (0, 0))[0], int(line.split()[1])), depth)
        stop.wait(0.2)


def watched(command: list[str], **popen) -> tuple[subprocess.Popen, threading.Event, dict, threading.Thread]:
    process = subprocess.Popen(command, **popen)
    stop, peaks = threading.Event(), {}
    watcher = threading.Thread(target=descendants_peak, args=(process.pid, stop, peaks), daemon=True)
    watcher.start()
    return process, stop, peaks, watcher


def memory(peaks: dict[int, tuple[int, int]]) -> tuple[float, float]:
    """(main process, median worker) peak MiB: the workers are two levels down (under the forkserver)."""
    main = [kb for kb, depth in peaks.values() if depth == 0]
    workers = [kb for kb, depth in peaks.values() if depth == 2]
    return (main[0] / 1024 if main else float("nan")), (median(workers) / 1024 if workers else float("nan"))


def build_table(rounds: int) -> list[str]:
    portraits = sorted((CONGRESS / "images").glob("*.jpg"))[:BUILD_PHOTOS]
    results: dict[str, list[tuple[float, float, float]]] = {backend: [] for backend in BACKENDS}
    with tempfile.TemporaryDirectory() as root:
        images = Path(root) / "images"
        images.mkdir()
        for path in portraits:
            shutil.copy(path, images)
        for number in range(rounds):
            for backend in BACKENDS:
                command = [sys.executable, "-m", "lookalike_cli", "build", "--images", str(images), "--catalog",
                           str(CONGRESS / "catalog.json"), "--data-dir", f"{root}/data-{backend}-{number}",
                           "--workers", "2", "--descriptor-backend", backend]
                started = time.perf_counter()
                process, stop, peaks, watcher = watched(command, stdout=subprocess.DEVNULL)
                if process.wait() != 0:
                    raise SystemExit(f"{' '.join(command)} failed")
                seconds = time.perf_counter() - started
                stop.set()
                watcher.join()
                results[backend].append((seconds, *memory(peaks)))
                print("build", backend, results[backend][-1], flush=True)
    rows = [[backend, f"{median([r[0] for r in runs]):.1f}", f"{BUILD_PHOTOS / median([r[0] for r in runs]):.2f}",
             f"{median([r[0] for r in results['dlib']]) / median([r[0] for r in runs]):.2f}x",
             f"{median([r[2] for r in runs]):.0f}", f"{median([r[1] for r in runs]):.0f}",
             " ".join(f"{r[0]:.1f}" for r in runs)] for backend, runs in results.items()]
    return [f"`lookalike build` of the first {BUILD_PHOTOS} congress portraits, default settings (num_jitters 10), "
            f"--workers 2, into a fresh data directory; {rounds} round(s), the backends taking turns. Memory: peak "
            "resident (VmHWM) of each worker process (median over the workers) and of the main process.\n",
            markdown_table(["--descriptor-backend", "seconds", "photos/s", "speed-up", "worker peak MiB",
                            "main peak MiB", "rounds (s)"], rows)]


def serve_table(rounds: int, seconds: float) -> list[str]:
    data_dir = demo_gallery()
    photo_sets = {"selfie 225x275": [(REPO / "data/demo/selfie.jpg").read_bytes()],
                  "faces/people, 55 photos": [path.read_bytes() for path in shared_photos("people/*/*")]}
    servers = {}
    for backend in BACKENDS:
        process, stop, peaks, watcher = watched(
            [sys.executable, "-m", "lookalike_cli", "serve", "--data-dir", str(data_dir), "--port", "0",
             "--workers", "2", "--descriptor-backend", backend], stdout=subprocess.PIPE, text=True)
        line = process.stdout.readline()
        if " on http://" not in line:
            process.kill()
            raise SystemExit(f"lookalike serve did not start: {line!r}")
        servers[backend] = (process, stop, peaks, watcher, line.split(" on ")[1].split()[0])
    results: dict[tuple[str, str], list[dict]] = {}
    try:
        for _ in range(rounds):
            for name, photos in photo_sets.items():
                for backend, (*_, url) in servers.items():
                    results.setdefault((name, backend), []).append(load(url, photos, seconds))
                    print("serve", name, backend, results[(name, backend)][-1], flush=True)
    finally:
        for process, stop, _, watcher, _ in servers.values():
            process.send_signal(signal.SIGINT)
            process.wait(30)
            stop.set()
            watcher.join()
    rows = []
    for (name, backend), runs in results.items():
        rate = median([run["per_second"] for run in runs])
        before = median([run["per_second"] for run in results[(name, "dlib")]])
        rows.append([name, backend, f"{rate:.1f}", f"{rate / before:.2f}x", ms(median([run["p50"] for run in runs])),
                     ms(median([run["p99"] for run in runs])), f"{memory(servers[backend][2])[1]:.0f}"])
    return [f"`lookalike serve --workers 2` over the 48-person demo gallery, 4 closed-loop clients (as "
            f"bench_serve.py); {rounds} rounds of {seconds:g} s per row, the two servers taking turns; query "
            "num_jitters 1.\n", markdown_table(["photos", "--descriptor-backend", "answered/s", "speed-up", "p50 ms",
                                                "p99 ms", "worker peak MiB"], rows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--only", default="descriptor,build,serve", help="comma-separated parts")
    args = parser.parse_args()
    require_shared()
    rounds, repeats, builds, serve_seconds = (5, 10, 2, 15.0) if args.full else (3, 5, 1, 8.0)
    parts = args.only.split(",")
    lines = [header("Descriptors: dlib against its network run by numpy",
                    ["benchmarks/bench_descriptor.py", *sys.argv[1:]])]
    if "descriptor" in parts:
        lines += ["### Per chip and per face, one thread", "", *descriptor_table(rounds, repeats), ""]
    if "build" in parts:
        lines += ["### `lookalike build`", "", *build_table(builds), ""]
    if "serve" in parts:
        lines += ["### `lookalike serve`", "", *serve_table(2, serve_seconds), ""]
    lines.append(f"Load (1, 5, 15 min) at the end: {load_average()}.")
    write_report("descriptor-full" if args.full else "descriptor-quick", "\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], int(sys.argv[3]), sys.argv[4] == "True")))
    else:
        main()
