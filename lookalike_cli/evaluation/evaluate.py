"""``eval``: how good the answers are, measured on a labelled photo tree (``DIR/<person>/*.jpg``).

Each person's photos are split into gallery and probes (seeded; one probe for people with two or three
photos, half of them from four on, none for a single photo). The gallery, with optional distractor people
who have no probes, is built in a temporary data directory with the current config; the probes are answered
like queries. Reported: top-1/top-5 identification, verification over all same/different pairs of photos,
the calibration and the similarity of right and wrong answers, the index's recall@1 against exact search,
and the same identification for every way of cleaning identities and choosing gallery vectors, side by side
(with intruders, also for a "perfect" cleaning that drops exactly them).
With ``intruders``, each probed person's gallery folder also gets that many photos of other people (a dirty
crawl: photos moved from co-stars with photos to spare, else distractors).
With ``degradations`` (``shrink:160,jpeg:35``...), the probes are also answered degraded each way, with the
detection fallback off and on, side by side: how often no face is found, top-1, and which look found the faces,
also per band of face size (eye distance).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..answers.query import Lookalike
from ..answers.results import Match
from ..config import CleanConfig, Config, ImageConfig, choices_of
from ..errors import LookalikeError
from ..face.identity import dominant_identity, gallery_selection
from ..face.models import DETECTORS, Face
from ..files import write_bytes, write_json
from ..gallery.search import ExactIndex
from ..imaging.decode import ImageRejected, read_image
from ..imaging.gallery import list_gallery
from ..imaging.geometry import box_area
from ..io.artifacts import EMBEDDING_SIZE, DataDir
from ..plots import png_bytes, require_matplotlib
from ..stages.build import build
from .degrade import Step, degrade, parse_degradation

log = logging.getLogger(__name__)

FAR = 0.001
TOP_K = 5
SWEEP = (0.5, 0.55, 0.6, 0.65, 0.7)
GALLERY_MODES = choices_of(CleanConfig, "gallery_vectors")
EYE_BANDS = (12, 24)  # pixels between the eye centres: below 12 the descriptor often errs (benchmarks/EVAL.md)


def split_photos(photos: dict[str, list[str]], seed: int) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    """(gallery photos per person, probes as (person, photo)): a seeded shuffle of each person's photos, then
    none held out of one photo, one (leave-one-out) of two or three, half of four or more."""
    rng = np.random.default_rng(seed)
    gallery: dict[str, list[str]] = {}
    probes: list[tuple[str, str]] = []
    for person in sorted(photos):
        paths = [sorted(photos[person])[i] for i in rng.permutation(len(photos[person]))]
        held = 0 if len(paths) == 1 else 1 if len(paths) <= 3 else len(paths) // 2
        gallery[person] = sorted(paths[held:])
        probes += [(person, path) for path in sorted(paths[:held])]
    return gallery, probes


def pair_distances(vectors: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances of all same-label pairs and of all different-label pairs (each unordered pair once)."""
    first, second = np.triu_indices(len(vectors), k=1)
    distances = np.empty(len(first), dtype=np.float64)
    step = 1 << 20
    for start in range(0, len(first), step):
        a, b = first[start:start + step], second[start:start + step]
        distances[start:start + step] = np.linalg.norm(vectors[a] - vectors[b], axis=1)
    same = labels[first] == labels[second]
    return distances[same], distances[~same]


def tar_at_far(same: np.ndarray, different: np.ndarray, far: float) -> tuple[float, float]:
    """(true-accept rate, threshold) when pairs closer than the threshold are accepted and at most ``far``
    of the different pairs may be."""
    allowed = int(np.floor(far * len(different)))
    threshold = float(np.sort(different)[allowed]) if allowed < len(different) else float("inf")
    return float(np.mean(same < threshold)), threshold


def verification_accuracy(same: np.ndarray, different: np.ndarray, threshold: float) -> float:
    """Balanced accuracy of "same person" when closer than ``threshold``: the mean of the share of same pairs
    accepted and the share of different pairs rejected (the pair counts differ by orders of magnitude)."""
    return float((np.mean(same < threshold) + np.mean(different >= threshold)) / 2)


def best_threshold(same: np.ndarray, different: np.ndarray) -> tuple[float, float]:
    """(balanced accuracy, threshold) at the threshold that maximises it (ties: the smallest)."""
    candidates = np.unique(np.concatenate([same, different]))
    candidates = np.append(candidates, np.inf)
    accepted_same = np.searchsorted(np.sort(same), candidates, side="left") / len(same)
    rejected_different = 1 - np.searchsorted(np.sort(different), candidates, side="left") / len(different)
    accuracy = (accepted_same + rejected_different) / 2
    best = int(np.argmax(accuracy))
    return float(accuracy[best]), float(candidates[best])


def nearest_per_person(probes: np.ndarray, vectors: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(people, distances probes x people): each person at the distance of their nearest vector."""
    people, inverse = np.unique(labels, return_inverse=True)
    distances = np.sqrt(ExactIndex(vectors).squared_distances(probes))
    nearest = np.full((len(probes), len(people)), np.inf)
    np.minimum.at(nearest.T, inverse, distances.T)
    return people, nearest


def rank_people(people: np.ndarray, nearest: np.ndarray, k: int) -> list[list[str]]:
    """For each probe, the ``k`` nearest people."""
    order = np.argsort(nearest, axis=1, kind="stable")[:, :k]
    return [[str(people[i]) for i in row] for row in order]


def margins(people: np.ndarray, nearest: np.ndarray, truth: list[str]) -> np.ndarray:
    """For each probe whose person is in the gallery, how much nearer that person is than the nearest other
    (positive: answered right)."""
    column = {str(person): number for number, person in enumerate(people)}
    result = []
    for row, person in zip(nearest, truth):
        if person in column:
            others = np.delete(row, column[person])
            result.append(others.min(initial=np.inf) - row[column[person]])
    return np.array(result)


def top_k_accuracy(ranked: list[list[str]], truth: list[str], k: int) -> float:
    """Share of probes whose person is among their first ``k`` answers (a probe without an answer misses)."""
    return float(np.mean([person in answers[:k] for answers, person in zip(ranked, truth)])) if truth else 0.0


def spread(values) -> dict:
    """Count, min, 10th percentile, median, 90th percentile and max of some values."""
    values = np.asarray(list(values), dtype=np.float64)
    if not len(values):
        return {"count": 0}
    quantiles = np.quantile(values, [0.0, 0.1, 0.5, 0.9, 1.0])
    return {"count": int(len(values))} | {name: round(float(value), 4) for name, value in
                                          zip(("min", "p10", "median", "p90", "max"), quantiles)}


def same_alias(alias: str) -> str:
    """An alias compared across folders: lower case, ``_`` and spaces read as ``-``."""
    return alias.lower().replace("_", "-").replace(" ", "-")


def photos_by_person(folder: Path, what: str) -> dict[str, list[str]]:
    if not folder.is_dir():
        raise LookalikeError(f"{what} folder {folder} does not exist or is not a folder")
    photos: dict[str, list[str]] = defaultdict(list)
    for image in list_gallery(folder):
        if image.problem is None:
            photos[image.alias].append(image.path)
    if not photos:
        raise LookalikeError(f"{what} folder {folder} holds no images (expected {folder}/<person>/*.jpg)")
    return dict(photos)


def lay_out(root: Path, entries: list[tuple[str, str, str]]) -> dict[str, str]:
    """Copy (folder, photo, identity) entries to ``root/<folder>/NNN.ext`` (the build refuses links that leave
    its folder); returns every copy's true identity."""
    truth: dict[str, str] = {}
    counts: Counter = Counter()
    for folder, source, identity in entries:
        target = root / folder / f"{counts[folder]:03d}{Path(source).suffix.lower()}"
        counts[folder] += 1
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        truth[str(target)] = identity
    return truth


def add_intruders(gallery: dict[str, list[str]], probed: list[str], distractors: dict[str, list[str]],
                  intruders: int, seed: int) -> list[tuple[str, str, str]]:
    """A dirty crawl: ``intruders`` photos of other people in each probed person's folder, each moved out of a
    labelled person's gallery that keeps two photos or more (a co-star), else out of the distractors.
    Changes ``gallery`` and ``distractors``; returns the (folder, photo, identity) entries of the intruders."""
    rng = np.random.default_rng(seed)
    moved = []
    for person in probed:
        for _ in range(intruders):
            donors = [donor for donor in sorted(gallery) if donor != person and len(gallery[donor]) >= 3]
            if donors:
                donor = donors[rng.integers(len(donors))]
                photo = gallery[donor].pop(int(rng.integers(len(gallery[donor]))))
            elif distractors:
                donor = sorted(distractors)[rng.integers(len(distractors))]
                photo = distractors.pop(donor)[0]
            else:
                raise LookalikeError(f"--intruders {intruders} needs more photos of other people: "
                                     "add --distractors")
            moved.append((person, photo, donor))
    return moved


def evaluate(images_dir: str | Path, out_dir: str | Path, distractors_dir: str | Path | None = None,
             seed: int = 0, intruders: int = 0, skip_distractors: tuple[str, ...] = (),
             config: Config = Config(), degradations: tuple[str, ...] = ()) -> dict:
    """Split, build in a temporary data directory, answer the probes and measure; writes ``eval.json`` and
    ``eval.png`` (distance histograms of same and different people) to ``out_dir``; returns the report."""
    degraded = {spec: parse_degradation(spec) for spec in degradations}
    plt = require_matplotlib("eval")
    labelled = photos_by_person(Path(images_dir), "images")
    distractors = photos_by_person(Path(distractors_dir), "distractors") if distractors_dir else {}
    same_people = {same_alias(alias) for alias in list(labelled) + list(skip_distractors)}
    skipped = sorted(alias for alias in distractors if same_alias(alias) in same_people)
    distractors = {alias: paths for alias, paths in distractors.items() if alias not in skipped}
    gallery, probes = split_photos(labelled, seed)
    if not probes:
        raise LookalikeError(f"no person in {images_dir} has two photos: there is nothing to probe")
    probed = sorted({person for person, _ in probes})
    moved = add_intruders(gallery, probed, distractors, intruders, seed)
    entries = [(person, path, person) for person, paths in gallery.items() for path in paths] + moved
    entries += [(alias, path, alias) for alias, paths in sorted(distractors.items()) for path in paths]
    with tempfile.TemporaryDirectory(prefix="lookalike-eval-") as tmp:
        root = Path(tmp).resolve()
        truth = lay_out(root / "images", entries)
        build(root / "images", root / "data", None, config)
        report, same, different = measure(root / "data", probes, truth, config)
        if degraded:
            report["degradations"] = degradation_rows(root / "data", probes, config, degraded)
    report["setup"] = {
        "images": str(images_dir), "distractors": str(distractors_dir) if distractors_dir else None,
        "seed": seed, "intruders_per_person": intruders, "people": len(labelled), "probed_people": len(probed),
        "gallery_photos": sum(len(paths) for paths in gallery.values()) + len(moved), "probes": len(probes),
        "distractor_people": len(distractors), "skipped_distractors": skipped,
        "num_jitters": config.embed.num_jitters, "query_num_jitters": config.query.query_num_jitters,
        "same_person_distance": config.clean.same_person_distance,
        "other_identities": config.clean.other_identities, "gallery_vectors": config.clean.gallery_vectors,
        "fallback": config.detect.fallback, "degradations": list(degraded),
    }
    out = Path(out_dir)
    write_json(out / "eval.json", report)
    write_bytes(out / "eval.png", histogram_png(plt, same, different, report))
    return report


def probe_answers(engine: Lookalike, probes: list[tuple[str, str]], policy: ImageConfig,
                  steps: tuple[Step, ...] = ()):
    """For each probe (degraded by ``steps``), its largest face, that face's descriptor and the engine's top
    answers; (None, None, []) without a face."""
    for _, path in probes:
        try:
            faces = engine.describe_faces(degrade(read_image(path, policy).pixels, steps))
        except ImageRejected:
            faces = []
        if not faces:
            yield None, None, []
            continue
        face, descriptor = max(faces, key=lambda item: box_area(item[0].box))
        yield face, descriptor, engine.nearest_people(descriptor, TOP_K)


def eye_band(eyes: float) -> str:
    """The band of EYE_BANDS that an eye distance (pixels of the photo) falls in: ``<12 px``, ``12-24 px``..."""
    low = 0
    for high in EYE_BANDS:
        if eyes < high:
            return f"<{high} px" if low == 0 else f"{low}-{high} px"
        low = high
    return f"{low}+ px"


EYE_BAND_ORDER = [eye_band(eyes) for eyes in (0, *EYE_BANDS)]


def top1_by_look(looks: list[str], right: list[bool]) -> dict:
    """Faces and top-1 per look of the detection chain (in the chain's order), for faces found by ``looks`` and
    answered right or not."""
    counted: dict[str, list[bool]] = defaultdict(list)
    for look, is_right in zip(looks, right):
        counted[look].append(is_right)
    return {look: {"faces": len(counted[look]), "top1": float(np.mean(counted[look]))}
            for look in DETECTORS if look in counted}


def looks_cell(by_look: dict) -> str:
    """``hog 19 (100%), cnn 1 (0%)``: faces and top-1 per look, as the report prints them."""
    return ", ".join(f"{look} {entry['faces']} ({entry['top1']:.0%})" for look, entry in by_look.items())


def identification_by_detector(faces: list[Face | None], answers: list[str | None], truth: list[str]) -> dict:
    """Identification of probes answered with the top-1 ``answers``, their largest ``faces`` (None: no face
    found): probes without a face, top-1 over all probes and over the found faces, per look of the detection
    chain its faces and their top-1, and per band of eye distance the same per look (faces of the same size
    side by side: small faces are hard for the descriptor whichever look found them)."""
    found = [i for i, face in enumerate(faces) if face is not None]
    right = [answers[i] == truth[i] for i in found]
    looks = [faces[i].detector for i in found]
    bands = [eye_band(faces[i].eye_distance) for i in found]
    by_eye_distance = {band: top1_by_look([look for look, b in zip(looks, bands) if b == band],
                                          [hit for hit, b in zip(right, bands) if b == band])
                       for band in sorted(set(bands), key=EYE_BAND_ORDER.index)}
    return {"probes": len(truth), "no_face": len(truth) - len(found),
            "top1": sum(right) / len(truth) if truth else 0.0, "top1_found": sum(right) / len(found) if found else None,
            "by_detector": top1_by_look(looks, right), "by_eye_distance": by_eye_distance}


def degradation_rows(data: Path, probes: list[tuple[str, str]], config: Config,
                     degraded: dict[str, tuple[Step, ...]]) -> list[dict]:
    """Identification of the probes as they are and degraded each way, with the detection fallback off and on,
    and the median seconds a probe took to answer."""
    people = [person for person, _ in probes]
    engines: dict[bool, Lookalike] = {}
    for fallback in (False, True):
        chained = replace(config, detect=replace(config.detect, fallback=fallback))
        engines[fallback] = Lookalike(data, chained, engines[False].models if engines else None)
    rows = []
    for spec, steps in {"none": (), **degraded}.items():
        for fallback, engine in engines.items():
            faces, answers, seconds = [], [], []
            started = time.perf_counter()
            for face, _, matches in probe_answers(engine, probes, config.image, steps):
                seconds.append(time.perf_counter() - started)
                faces.append(face)
                answers.append(matches[0].alias if matches else None)
                started = time.perf_counter()
            rows.append({"degradation": spec, "fallback": fallback,
                         "seconds_per_probe": round(float(np.median(seconds)), 3)}
                        | identification_by_detector(faces, answers, people))
            log.info("eval: %s, fallback %s: %d of %d without a face", spec, "on" if fallback else "off",
                     rows[-1]["no_face"], len(probes))
    return rows


@dataclass(frozen=True)
class ProbeAnswers:
    """The probes as the engine answered them: each probe's person, the probes in which a face was found (their
    positions) and those faces' descriptors, and every probe's top answers (none without a face)."""

    people: list[str]
    with_face: list[int]
    descriptors: np.ndarray  # len(with_face) x 128
    answers: list[list[Match]]


def answer_probes(engine: Lookalike, probes: list[tuple[str, str]], policy: ImageConfig) -> ProbeAnswers:
    """The engine's answers to the (person, photo) ``probes``."""
    answered = [(descriptor, matches) for _, descriptor, matches in probe_answers(engine, probes, policy)]
    with_face = [i for i, (descriptor, _) in enumerate(answered) if descriptor is not None]
    descriptors = np.array([answered[i][0] for i in with_face], dtype=np.float32).reshape(-1, EMBEDDING_SIZE)
    return ProbeAnswers([person for person, _ in probes], with_face, descriptors,
                        [matches for _, matches in answered])


def identification(probes: ProbeAnswers, vectors: np.ndarray, labels: np.ndarray, mode: str) -> dict:
    """Top-1, top-5 and the median margin of the probes searched exactly in a gallery of ``vectors`` with
    ``labels``, its vectors chosen by ``mode`` (a ``clean.gallery_vectors`` choice); a probe without a face
    misses, and without a face whose person is in the gallery there is no margin (None)."""
    selected, selected_labels, _ = gallery_selection(vectors, labels, mode)
    gallery_people, nearest = nearest_per_person(probes.descriptors, selected, selected_labels)
    ranked = dict(zip(probes.with_face, rank_people(gallery_people, nearest, TOP_K)))
    answers = [ranked.get(i, []) for i in range(len(probes.people))]
    margin = margins(gallery_people, nearest, [probes.people[i] for i in probes.with_face])
    return {"top1": top_k_accuracy(answers, probes.people, 1), "top5": top_k_accuracy(answers, probes.people, TOP_K),
            "margin_median": round(float(np.median(margin)), 4) if len(margin) else None}


def gallery_variants(probes: ProbeAnswers, vectors: np.ndarray, folders: np.ndarray, agreeing: np.ndarray,
                     genuine: np.ndarray) -> list[dict]:
    """Identification for every way of cleaning the gallery photos (``vectors`` in their person's ``folders``):
    off, on (the photos ``agreeing`` with their person's dominant identity) and, when some are intruders,
    perfect (the ``genuine`` photos: what a crawl without intruders would give, the bound for cleaning), each
    with every way of choosing gallery vectors."""
    galleries = [("off", np.ones(len(vectors), dtype=bool)), ("on", agreeing)]
    if not genuine.all():
        galleries.append(("perfect", genuine))
    return [{"cleaning": cleaning, "gallery_vectors": mode}
            | identification(probes, vectors[kept], folders[kept], mode)
            for cleaning, kept in galleries for mode in GALLERY_MODES]


def threshold_sweep(probes: ProbeAnswers, vectors: np.ndarray, folders: np.ndarray, genuine: np.ndarray,
                    mode: str) -> list[dict]:
    """For each ``same_person_distance`` of SWEEP, the cleaning it makes of the gallery photos (``vectors`` in
    their person's ``folders``, ``genuine`` where they show that person): genuine photos rejected, intruders
    kept, and the identification from the photos kept, their vectors chosen by ``mode``."""
    rows = []
    for threshold in SWEEP:
        kept = np.zeros(len(vectors), dtype=bool)
        for folder in np.unique(folders):
            photos = np.flatnonzero(folders == folder)
            kept[photos] = dominant_identity(vectors[photos], threshold).kept
        rows.append({"same_person_distance": threshold, "genuine_rejected": int((genuine & ~kept).sum()),
                     "intruders_kept": int((~genuine & kept).sum())}
                    | identification(probes, vectors[kept], folders[kept], mode))
    return rows


def verification(same: np.ndarray, different: np.ndarray, threshold: float) -> dict:
    """Verification over the distances of all same-person and different-person pairs: the balanced accuracy at
    ``threshold`` and at the best threshold, and the true-accept rate at a false-accept rate of FAR."""
    tar, tar_threshold = tar_at_far(same, different, FAR)
    best_accuracy, best = best_threshold(same, different)
    return {"same_pairs": len(same), "different_pairs": len(different), "threshold": threshold,
            "accuracy": verification_accuracy(same, different, threshold), "best_accuracy": best_accuracy,
            "best_threshold": best, "far": FAR, "tar": tar, "tar_threshold": tar_threshold}


def measure(data: Path, probes: list[tuple[str, str]], truth: dict[str, str], config: Config):
    """The report of a built evaluation gallery, and the same/different pair distances."""
    data = DataDir(data)
    engine = Lookalike(data.root, config)
    answered = answer_probes(engine, probes, config.image)
    top = [answered.answers[i][0] for i in answered.with_face]
    correct = [match.alias == answered.people[i] for match, i in zip(top, answered.with_face)]
    ranked = [[match.alias for match in matches] for matches in answered.answers]

    photo_rows, photo_vectors = data.vectors("embeddings")
    identities = {row["path"]: row for row in data.read("identities").to_pylist()}
    folders = np.array([row["alias"] for row in photo_rows], dtype=object)
    identity = np.array([truth[row["path"]] for row in photo_rows], dtype=object)
    agreeing = np.array([identities[row["path"]]["reason"] == "ok" for row in photo_rows], dtype=bool)
    genuine = identity == folders

    probe_people = np.array([answered.people[i] for i in answered.with_face], dtype=object)
    same, different = pair_distances(np.concatenate([photo_vectors, answered.descriptors]),
                                     np.concatenate([identity, probe_people]))
    exact_ids, _ = ExactIndex(data.vectors("gallery")[1]).search(answered.descriptors, 1)
    index_ids, _ = engine.index.search(answered.descriptors, 1)
    calibration = data.read("calibration")
    report = {
        "schema_version": 1,
        "identification": {"probes": len(probes), "no_face": len(probes) - len(answered.with_face),
                           "top1": top_k_accuracy(ranked, answered.people, 1),
                           "top5": top_k_accuracy(ranked, answered.people, TOP_K)},
        "verification": verification(same, different, config.clean.same_person_distance),
        "calibration": {key: calibration[key] for key in ("mean", "std", "count")},
        "similarity": {"correct": spread(m.similarity for m, ok in zip(top, correct) if ok),
                       "wrong": spread(m.similarity for m, ok in zip(top, correct) if not ok)},
        "index": {"backend": engine.meta["backend"], "vectors": engine.meta["size"],
                  "recall_at_1": float(np.mean(index_ids[:, 0] == exact_ids[:, 0])) if answered.with_face else 1.0},
        "cleaning": {"photos": len(photo_rows), "genuine_rejected": int((genuine & ~agreeing).sum()),
                     "intruders": int((~genuine).sum()), "intruders_rejected": int((~genuine & ~agreeing).sum()),
                     "sweep": threshold_sweep(answered, photo_vectors, folders, genuine,
                                              config.clean.gallery_vectors)},
        "gallery_variants": gallery_variants(answered, photo_vectors, folders, agreeing, genuine),
    }
    return report, same, different


def far_label(far: float) -> str:
    """``FAR 0.1%``: a false-accept rate as the report shows it."""
    return f"FAR {far * 100:g}%"


def histogram_png(plt, same: np.ndarray, different: np.ndarray, report: dict) -> bytes:
    """A PNG of the distance histograms of same-person and different-person pairs."""
    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=100)
    bins = np.linspace(0.0, max(float(different.max(initial=1.0)), float(same.max(initial=1.0))), 80)
    axes.hist(different, bins=bins, density=True, alpha=0.6, label=f"different people ({len(different)} pairs)")
    axes.hist(same, bins=bins, density=True, alpha=0.6, label=f"same person ({len(same)} pairs)")
    verification = report["verification"]
    axes.axvline(verification["threshold"], color="black", linestyle="--",
                 label=f"same_person_distance {verification['threshold']:.2f}")
    axes.axvline(verification["tar_threshold"], color="red", linestyle=":",
                 label=f"{far_label(verification['far'])} at {verification['tar_threshold']:.3f}")
    axes.set_xlabel("descriptor distance")
    axes.set_ylabel("density")
    axes.set_title("lookalike eval: distances between photos")
    axes.legend()
    return png_bytes(plt, figure)


def format_report(report: dict) -> list[str]:
    """The report as terminal lines."""
    setup, ident, verif = report["setup"], report["identification"], report["verification"]
    cal, index, cleaning = report["calibration"], report["index"], report["cleaning"]
    lines = [
        f"eval: {setup['people']} people ({setup['probed_people']} probed), {setup['gallery_photos']} gallery "
        f"photos, {setup['probes']} probes, {setup['distractor_people']} distractor people, "
        f"{setup['intruders_per_person']} intruders per person, seed {setup['seed']}",
        f"  identification       top-1 {ident['top1']:.1%}  top-5 {ident['top5']:.1%}  "
        f"({ident['no_face']} probes without a face)",
        f"  verification         accuracy {verif['accuracy']:.1%} at {verif['threshold']:.2f} "
        f"(best {verif['best_accuracy']:.1%} at {verif['best_threshold']:.3f}); "
        f"TAR {verif['tar']:.1%} at {far_label(verif['far'])} (distance < {verif['tar_threshold']:.3f}); "
        f"{verif['same_pairs']} same / {verif['different_pairs']} different pairs",
        f"  calibration          nearest other person {cal['mean']:.3f} +- {cal['std']:.3f} over {cal['count']}",
    ]
    for outcome in ("correct", "wrong"):
        values = report["similarity"][outcome]
        shown = (f"median {values['median']:.0%}, 10-90% {values['p10']:.0%}-{values['p90']:.0%}, "
                 f"range {values['min']:.0%}-{values['max']:.0%}") if values["count"] else "-"
        lines.append(f"  similarity {outcome:8s}  {values['count']} answers: {shown}")
    lines += [
        f"  index                {index['backend']} over {index['vectors']} vectors, recall@1 vs exact "
        f"{index['recall_at_1']:.1%}",
        f"  cleaning             {cleaning['photos'] - cleaning['intruders']} photos in their person's folder, "
        f"{cleaning['genuine_rejected']} rejected; {cleaning['intruders']} intruders, "
        f"{cleaning['intruders_rejected']} rejected",
        "  cleaning  vectors   top-1   top-5   median margin (nearest other - right person)",
    ]
    lines += [f"  {v['cleaning']:8s}  {v['gallery_vectors']:8s}  {v['top1']:6.1%}  {v['top5']:6.1%}  "
              f"{'-' if v['margin_median'] is None else format(v['margin_median'], '.3f')}"
              for v in report["gallery_variants"]]
    lines.append("  same_person_distance  genuine rejected  intruders kept  top-1")
    lines += [f"  {row['same_person_distance']:20.2f}  {row['genuine_rejected']:16d}  {row['intruders_kept']:14d}"
              f"  {row['top1']:6.1%}" for row in cleaning["sweep"]]
    if "degradations" in report:
        lines.append("  degradation           fallback  no face   top-1  top-1 of found  s/probe  found by (top-1)")
        for row in report["degradations"]:
            found = looks_cell(row["by_detector"])
            top1_found = "-" if row["top1_found"] is None else f"{row['top1_found']:.1%}"
            lines.append(f"  {row['degradation']:20s}  {'on' if row['fallback'] else 'off':8s}  "
                         f"{row['no_face']:3d}/{row['probes']:<3d}  {row['top1']:6.1%}  {top1_found:>14s}  "
                         f"{row['seconds_per_probe']:7.2f}  {found}")
        lines.append("  top-1 of found faces by eye distance, fallback on: faces (top-1) per look")
        lines.append(f"  {'degradation':20s}  " + "  ".join(f"{band:28s}" for band in EYE_BAND_ORDER).rstrip())
        for row in report["degradations"]:
            if row["fallback"]:
                bands = [looks_cell(row["by_eye_distance"].get(band, {})) or "-" for band in EYE_BAND_ORDER]
                lines.append(f"  {row['degradation']:20s}  " + "  ".join(f"{cell:28s}" for cell in bands).rstrip())
    return lines
