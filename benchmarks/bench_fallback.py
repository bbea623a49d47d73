"""The detection fallback (HOG, HOG on an enlarged copy, dlib's CNN): its pixel budgets, and its cost per query
side by side with the chain off, in one process and through the recognition pool of serve and bot.

    .venv/bin/python benchmarks/bench_fallback.py          # quick: 20 ordinary photos, 3 rounds
    .venv/bin/python benchmarks/bench_fallback.py --full   # all 55 ordinary photos, 5 rounds

Ordinary photos: the labelled photos of faces/people (one face each, HOG's first look finds it). Photos that need
the fallback: the same photos degraded (DEGRADATIONS) so that HOG's first look finds no face. Photos without a
face: the coffee cup of faces/public_domain, noise and a drawn landscape, each as is and as a 160 px JPEG. The
gallery is the 879 congress portraits (benchmarks/.cache). Every comparison is interleaved, photo by photo.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from common import FACES, congress_gallery, header, markdown_table, median, ms, percentile, shared_photos, \
    write_report

DEGRADATIONS = ("shrink:160,jpeg:35", "shrink:320,blur:3", "rotate:20", "dark:0.15")
CNN_BUDGETS = (60_000, 100_000, 160_000, 250_000, 400_000)
HOG_BUDGETS = (100_000, 250_000, 500_000, 1_000_000)
LARGE_PIXELS = 24_000_000  # a dim photo from a phone's camera: what the stretched look costs at that size


def with_detect(config, **settings):
    return dataclasses.replace(config, detect=dataclasses.replace(config.detect, **settings))


def landscape(width: int = 640, height: int = 427) -> np.ndarray:
    """Sky, sun, mountains, a meadow and fir trees: an image without a face (also for tests/test_detection.py)."""
    from PIL import Image, ImageDraw, ImageFilter

    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height // 2):
        draw.line([(0, y), (width, y)], fill=(90 + y // 3, 150 + y // 4, 230))
    draw.ellipse([width * 0.7, height * 0.08, width * 0.8, height * 0.23], fill=(255, 230, 120))
    draw.polygon([(0, height * 0.55), (width * 0.25, height * 0.25), (width * 0.5, height * 0.5),
                  (width * 0.7, height * 0.3), (width, height * 0.55), (width, height), (0, height)],
                 fill=(110, 120, 130))
    draw.rectangle([0, height * 0.6, width, height], fill=(70, 130, 60))
    for x in range(20, width, 45):
        draw.polygon([(x, height * 0.55), (x - 15, height * 0.8), (x + 15, height * 0.8)], fill=(30, 80, 35))
        draw.rectangle([x - 3, height * 0.8, x + 3, height * 0.86], fill=(90, 60, 30))
    return np.asarray(image.filter(ImageFilter.GaussianBlur(1)))


def photo_sets(models, detect, full: bool):
    """(ordinary, needing, empty): (name, RGB array, original RGB array) of the ordinary photos, of the degraded
    photos in which HOG's first look finds no face, and (name, RGB array) of the images without a face."""
    from lookalike_cli.config import ImageConfig
    from lookalike_cli.evaluation.degrade import degrade, parse_degradation
    from lookalike_cli.imaging.decode import read_image

    photos = shared_photos("people/*/*")
    originals = {path: read_image(path, ImageConfig()).pixels for path in photos}
    ordinary = [(f"{p.parent.name}/{p.name}", image, image) for p, image in originals.items()]
    needing = []
    for spec in DEGRADATIONS:
        for path, original in originals.items():
            image = degrade(original, parse_degradation(spec))
            if not models.find_faces(image, detect.upsample, detect.min_detection_score, detect.detect_max_size):
                needing.append((f"{path.parent.name}/{path.name} {spec}", image, original))
    coffee = read_image(FACES / "public_domain" / "no_face_coffee_cc0.png", ImageConfig()).pixels
    noise = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    small = parse_degradation("shrink:160,jpeg:35")
    empty = [(name, variant) for name, image in (("coffee", coffee), ("noise", noise), ("landscape", landscape()))
             for name, variant in ((name, image), (f"{name} 160 px", degrade(image, small)))]
    return (ordinary if full else ordinary[:20]), needing, empty


def budget_rows(models, detect, needing, empty, look: str, budgets) -> list[list]:
    """For each budget of a fallback look: faces found on the photos that need the fallback, the L2 distance of
    their descriptors to the undegraded photo's face's, time per image, and faces found where there is none."""
    rows = []
    for budget in budgets:
        settings = dataclasses.replace(detect, **({"cnn_pixels": budget} if look == "cnn"
                                                  else {"fallback_hog_pixels": budget}))
        run = models.cnn_faces if look == "cnn" else models.upsampled_faces
        seconds, distances, found = [], [], 0
        for _, image, original in needing:
            started = time.perf_counter()
            faces = run(image, settings)
            seconds.append(time.perf_counter() - started)
            if faces:
                found += 1
                reference = models.detect(original, detect.upsample, detect.min_detection_score,
                                          detect.detect_max_size)[0]
                distances.append(float(np.linalg.norm(models.descriptor(image, faces[0])
                                                      - models.descriptor(original, reference))))
        false = sum(bool(run(image, settings)) for _, image in empty)
        rows.append([look, f"{budget:,}", f"{found} of {len(needing)}",
                     f"{median(distances):.3f}" if distances else "-", ms(median(seconds)), ms(max(seconds)),
                     f"{false} of {len(empty)}"])
    return rows


def stretched_look(models, image: np.ndarray, detect) -> list:
    """The fallback's look at a dim photo as the chain takes it: the tone check, then (when dim) HOG's look
    through the stretch."""
    from lookalike_cli.imaging.tones import dim_tones

    tones = dim_tones(image, detect.fallback_stretch_span)
    return [] if tones is None else models.stretched_faces(image, detect, tones)


def per_query(engine_on, engine_off, ordinary, needing, empty, rounds: int) -> tuple[list[list], list[float]]:
    """Median ms per photo of the whole answer (detect, describe, search), the chain on and off interleaved; and
    for the photos that need the fallback (all, and the dim ones) or have no face, each look of the chain timed on
    its own."""
    from lookalike_cli.imaging.tones import dim_tones, scaled_image

    models, detect = engine_on.models, engine_on.config.detect
    ratios = []
    totals = {"on": [], "off": []}
    per_photo = {"on": [], "off": []}
    for _ in range(rounds):
        spent = {"on": 0.0, "off": 0.0}
        for _, image, _ in ordinary:
            for key, engine in (("off", engine_off), ("on", engine_on)):
                started = time.perf_counter()
                engine.answer_image(image)
                spent[key] += time.perf_counter() - started
                per_photo[key].append(time.perf_counter() - started)
        ratios.append(spent["on"] / spent["off"])
        for key in spent:
            totals[key].append(spent[key])
    rows = [["ordinary (HOG's first look finds the face)", len(ordinary), ms(median(per_photo["off"])),
             ms(median(per_photo["on"])), "-", "-", "-", "-"]]
    dim = [(name, image) for name, image, _ in needing if dim_tones(image, detect.fallback_stretch_span) is not None]
    large_dim = [(name, scaled_image(image, (LARGE_PIXELS / image[..., 0].size) ** 0.5)) for name, image in dim]
    for kind, images in (("need the fallback", [(name, image) for name, image, _ in needing]),
                         ("of which dim (stretched)", dim),
                         (f"the dim ones enlarged to {LARGE_PIXELS:,} px", large_dim), ("no face", empty)):
        looks = {"first": [], "stretched": [], "enlarged": [], "cnn": [], "off": [], "on": []}
        for _ in range(rounds):
            for _, image in images:
                for key, work in (
                        ("first", lambda: models.find_faces(image, detect.upsample, detect.min_detection_score,
                                                            detect.detect_max_size)),
                        ("stretched", lambda: stretched_look(models, image, detect)),
                        ("enlarged", lambda: models.upsampled_faces(image, detect)),
                        ("cnn", lambda: models.cnn_faces(image, detect)),
                        ("off", lambda: engine_off.answer_image(image)),
                        ("on", lambda: engine_on.answer_image(image))):
                    started = time.perf_counter()
                    work()
                    looks[key].append(time.perf_counter() - started)
        rows.append([kind, len(images), ms(median(looks["off"])), ms(median(looks["on"])),
                     ms(median(looks["first"])), ms(median(looks["stretched"])), ms(median(looks["enlarged"])),
                     ms(median(looks["cnn"]))])
    return rows, ratios


def timed_recognition(data: bytes) -> tuple[float, list[str]]:
    """In a recognition worker: the seconds one photo took, and the detectors of its faces."""
    from lookalike_cli.answers.recognizer import recognize_photo

    started = time.perf_counter()
    result, _ = recognize_photo(data, "bench", False)
    return time.perf_counter() - started, [face.detector for face in result.faces]


def pool_rows(data_dir, config, ordinary: list[bytes], needing: list[bytes], rounds: int) -> list[list]:
    """Per photo through the recognition pool of serve and bot (recognizer.load_engine, recognize_photo) with
    1 and 2 workers, the chain off and on: median and p90 ms in the worker, photos answered per second."""
    from lookalike_cli.io.artifacts import DataDir
    from lookalike_cli.gallery.generations import current_generation
    from lookalike_cli.answers.recognizer import load_engine

    generation = current_generation(DataDir(data_dir))
    rows = []
    for workers in (1, 2):
        for fallback in (False, True):
            chained = with_detect(config, fallback=fallback)
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"),
                                     initializer=load_engine, initargs=(str(data_dir), chained, generation)) as pool:
                list(pool.map(timed_recognition, needing[:workers * 2]))  # every worker loaded and warm
                for kind, photos in (("ordinary", ordinary), ("need the fallback", needing)):
                    started = time.perf_counter()
                    answers = list(pool.map(timed_recognition, photos * rounds))
                    wall = time.perf_counter() - started
                    found = sum(bool(detectors) for _, detectors in answers) // rounds
                    seconds = [spent for spent, _ in answers]
                    rows.append([workers, "on" if fallback else "off", kind, f"{found} of {len(photos)}",
                                 ms(median(seconds)), ms(percentile(seconds, 90)), f"{len(answers) / wall:.2f}"])
    return rows


def filter_rows(sets: dict[str, list[np.ndarray]], rounds: int) -> list[list]:
    """``lookalike filter`` (one worker) over each set of images written as PNGs, with ``--gallery-fallback``
    and without, alternately, a fresh data directory each time (no cached detections): photos accepted, and the
    median seconds a run took per photo (loading the models included)."""
    from lookalike_cli.config import load_config
    from lookalike_cli.stages.filter import filter_images

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, images in sets.items():
            folder = Path(tmp) / kind
            folder.mkdir()
            for number, image in enumerate(images):
                (folder / f"{number:03d}.png").write_bytes(png(image))
            spent: dict[bool, list[float]] = {False: [], True: []}
            accepted = {}
            for run in range(rounds):
                for fallback in (False, True):
                    config = load_config(None, {"workers": 1, "gallery_fallback": fallback})
                    started = time.perf_counter()
                    summary = filter_images(folder, Path(tmp) / f"{kind}-{fallback}-{run}", config=config)
                    spent[fallback].append((time.perf_counter() - started) / len(images))
                    accepted[fallback] = summary.accepted
            rows += [[kind, len(images), "on" if fallback else "off", accepted[fallback], ms(median(spent[fallback]))]
                     for fallback in (False, True)]
    return rows


def section(title: str, intro: str, headers: list[str], rows: list[list]) -> list[str]:
    """A report's section: its title, what it measures, and its table."""
    return [f"### {title}", "", intro + "\n", markdown_table(headers, rows), ""]


def png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    rounds = 5 if args.full else 3
    data_dir = congress_gallery()
    from lookalike_cli.config import Config
    from lookalike_cli.answers.query import Lookalike

    config = Config()
    engine_on = Lookalike(data_dir, config)
    engine_off = Lookalike(data_dir, with_detect(config, fallback=False), engine_on.models)
    models, detect = engine_on.models, config.detect
    ordinary, needing, empty = photo_sets(models, detect, args.full)

    budgets = budget_rows(models, detect, needing, empty, "hog-upsampled", HOG_BUDGETS)
    budgets += budget_rows(models, detect, needing, empty, "cnn", CNN_BUDGETS)
    queries, ratios = per_query(engine_on, engine_off, ordinary, needing, empty, rounds)
    pool = pool_rows(data_dir, config, [png(image) for _, image, _ in ordinary],
                     [png(image) for _, image, _ in needing], rounds)
    filtering = filter_rows({"ordinary": [image for _, image, _ in ordinary],
                             "need the fallback": [image for _, image, _ in needing],
                             "no face": [image for _, image in empty]}, rounds)
    text = "\n".join([
        header("The detection fallback", ["benchmarks/bench_fallback.py", *sys.argv[1:]]),
        f"{len(ordinary)} ordinary photos (faces/people); {len(needing)} photos that need the fallback (faces/people "
        f"degraded by {', '.join(DEGRADATIONS)}, in which HOG's first look finds no face); {len(empty)} images "
        f"without a face (coffee cup, noise, landscape; each also as a 160 px JPEG). Gallery: 879 congress "
        f"portraits. Settings: the defaults (detect.cnn_pixels {detect.cnn_pixels:,}, fallback_hog_pixels "
        f"{detect.fallback_hog_pixels:,}, cnn_min_score {detect.cnn_min_score}, fallback_min_eye_distance "
        f"{detect.fallback_min_eye_distance}, fallback_max_tilt {detect.fallback_max_tilt}).", "",
        *section("Each look of the fallback at each pixel budget",
                 "Alone on the photos that need the fallback: faces found, the median L2 distance of a found face's "
                 "descriptor to the descriptor of the same face in the undegraded photo (the same-person threshold "
                 "is 0.6), time per photo (resize, detection, landmarks, checks); and faces found on the images "
                 "without one.",
                 ["look", "pixels", "faces found", "median L2 to the original", "median ms", "max ms",
                  "faces where there is none"], budgets),
        *section(f"Per query, in one process, the chain off and on ({rounds} rounds, interleaved photo by photo)",
                 "The whole answer (`Lookalike.answer_image`: detection, landmarks, descriptor, search) with "
                 "`--no-fallback` and with the chain; for the photos that need the fallback and those without a face, "
                 "each look alone too. Ordinary photos, total time chain on / off per round: "
                 f"{' '.join(f'{ratio:.3f}' for ratio in ratios)} (median {median(ratios):.3f}).",
                 ["photos", "count", "median ms, chain off", "median ms, chain on", "HOG's first look",
                  "tone check and stretched HOG look", "enlarged HOG look", "CNN look"], queries),
        *section(f"Through the recognition pool of serve and bot ({rounds} rounds, all submitted at once)",
                 "`recognizer.load_engine` and `recognize_photo` (decode a PNG, detect, describe, search) in 1 and 2 "
                 "worker processes:",
                 ["workers", "chain", "photos", "faces found", "median ms in the worker", "p90 ms",
                  "photos per second"], pool),
        *section(f"`lookalike filter` with `--gallery-fallback` and without ({rounds} rounds, alternately)",
                 "One worker, a fresh data directory each run (no cached detections), the filter's own checks (20 px "
                 "between the eyes, 80 px images): photos accepted, and ms per photo, loading the models included:",
                 ["photos", "count", "gallery fallback", "accepted", "median ms per photo"], filtering)])
    write_report("fallback-full" if args.full else "fallback-quick", text)


if __name__ == "__main__":
    main()
