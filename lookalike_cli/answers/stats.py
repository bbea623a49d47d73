"""``lookalike stats``: what the public got, from answer logs and the gallery they are measured against.

Coverage is the share of the current generation's people who were the best match (top-1) of at least one face;
the rest were never anyone's answer. A "hub" is a person who is top-1 far more often than a gallery of N
equally likely people would give: at least ``HUB_RATIO`` times the expected T/N of T answered faces, and so many
that a binomial count with p = 1/N reaches it with probability under ``HUB_ALPHA`` / N (Bonferroni over the N
people). A hub is often a gallery defect (a blurred, tiny or wrong photo that is near everyone), so it is listed
with its representative photo to look at.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Iterable

from ..gallery.generations import load_published
from ..io.artifacts import DataDir
from ..plots import png_bytes, require_matplotlib
from .log import AnswerLines
from .outcomes import ANSWERED

HUB_RATIO = 5.0
HUB_ALPHA = 0.01
SIMILARITY_BINS = 20  # of 0.05 over 0..1


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed from k upwards in log space (exact, no approximation)."""
    if k <= 0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_term = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + \
        (n - k) * math.log1p(-p)
    term, total = math.exp(log_term), 0.0
    for i in range(k, n + 1):
        total += term
        if i > n * p and term <= total * 1e-15:  # the terms only shrink from here on
            break
        term *= (n - i) / (i + 1) * p / (1 - p)
    return min(1.0, total)


def hub_p_value(count: int, total: int, people: int) -> float | None:
    """The binomial tail of a person's top-1 count when they are a hub (see the module's docstring), else None."""
    if people < 2 or count < HUB_RATIO * total / people:
        return None
    p_value = binomial_tail(count, total, 1 / people)
    return p_value if p_value < HUB_ALPHA / people else None


def similarity_bin(value: float, bins: int, low: float = 0.0, high: float = 1.0) -> int:
    """The bin of ``value`` among ``bins`` equal bins over [low, high] (the last bin includes ``high``; values
    outside go to the first or last bin)."""
    return min(bins - 1, max(0, int((value - low) / (high - low) * bins)))


def answer_stats(log_paths: Iterable[str | Path], data_dir: str | Path, top: int = 10) -> dict:
    """The report of answer logs against the current generation of ``data_dir`` (see the module's docstring), in
    one pass over the logs: memory grows with the gallery and the hours the logs span, not with their lines."""
    log_paths = list(log_paths)
    published = load_published(DataDir(data_dir))
    photo = {}
    for row in published.rows:
        photo.setdefault(row["alias"], row["image"])
    names = published.names
    lines = AnswerLines(log_paths)
    entries, first, last = 0, None, None
    top1, statuses, generations, per_hour = Counter(), Counter(), Counter(), Counter()
    similarities = [0] * SIMILARITY_BINS
    for entry in lines:
        entries += 1
        first, last = min(first or entry["time"], entry["time"]), max(last or entry["time"], entry["time"])
        statuses[entry["status"]] += 1
        generations[entry["generation"]] += 1
        per_hour[entry["time"][:13]] += 1
        for match in entry["matches"]:
            top1[match["alias"]] += 1
            similarities[similarity_bin(match["similarity"], SIMILARITY_BINS)] += 1
    matched = {alias: count for alias, count in top1.items() if alias in photo}
    faces, people = sum(matched.values()), len(photo)
    hubs = []
    for alias, count in sorted(matched.items(), key=lambda item: (-item[1], item[0])):
        p_value = hub_p_value(count, faces, people)
        if p_value is not None:
            hubs.append({"alias": alias, "name": names.get(alias, alias), "count": count,
                         "times_expected": round(count * people / faces, 1), "p_value": p_value,
                         "image": photo[alias]})
    return {
        "logs": [str(path) for path in log_paths], "entries": entries, "skipped_lines": lines.skipped,
        "first": first, "last": last,
        "generation": published.generation,
        "answers_by_generation": dict(generations.most_common()),
        "statuses": dict(statuses.most_common()),
        "errors": {status: count for status, count in statuses.most_common() if status not in ANSWERED},
        "faces": faces,
        "coverage": {"matched": len(matched), "people": people, "share": len(matched) / people if people else 0.0},
        "top": [{"alias": alias, "name": names.get(alias, alias), "count": count, "share": count / faces}
                for alias, count in sorted(matched.items(), key=lambda item: (-item[1], item[0]))[:top]],
        "never_matched": sorted(set(photo) - set(matched)),
        "hubs": hubs,
        "not_in_gallery": dict(sorted((alias, count) for alias, count in top1.items() if alias not in photo)),
        "similarity_histogram": {"bin_width": 1 / SIMILARITY_BINS, "counts": similarities},
        "per_hour": dict(sorted(per_hour.items())),
        "rank_frequency": sorted(matched.values(), reverse=True),
    }


def format_stats(report: dict, shown: int = 20) -> list[str]:
    """The report as text lines; long lists are cut at ``shown`` items."""
    coverage = report["coverage"]
    lines = [f"answers: {report['entries']} from {len(report['logs'])} log file(s)" +
             (f", {report['first']} to {report['last']}" if report["entries"] else "") +
             (f"; {report['skipped_lines']} unreadable line(s) skipped" if report["skipped_lines"] else ""),
             "statuses: " + (", ".join(f"{status} {count}" for status, count in report["statuses"].items())
                             or "none"),
             f"gallery: generation {report['generation']}, {coverage['people']} people; faces answered: "
             f"{report['faces']}",
             f"coverage: {coverage['matched']} of {coverage['people']} people ({coverage['share']:.1%}) were "
             "the best match of a face at least once"]
    if report["top"]:
        lines.append("most frequent best matches:")
        width = max(len(person["name"]) for person in report["top"])
        lines += [f"  {rank:>3}. {person['name']:<{width}}  {person['count']:>6}  {person['share']:6.1%}"
                  for rank, person in enumerate(report["top"], 1)]
    never = report["never_matched"]
    lines.append(f"never matched: {len(never)}" + (": " + ", ".join(never[:shown]) if never else "") +
                 (f", ... ({len(never) - shown} more)" if len(never) > shown else ""))
    lines.append(f"hubs (top-1 at least {HUB_RATIO:g}x as often as 1/N, binomial p < {HUB_ALPHA:g}/N): "
                 f"{len(report['hubs']) or 'none'}")
    lines += [f"  {hub['name']}: {hub['count']} faces, {hub['times_expected']:g}x expected, p {hub['p_value']:.1e}; "
              f"photo {hub['image']}" for hub in report["hubs"]]
    if report["not_in_gallery"]:
        lines.append(f"best matches no longer in the gallery: {len(report['not_in_gallery'])} people, "
                     f"{sum(report['not_in_gallery'].values())} faces")
    counts = report["similarity_histogram"]["counts"]
    if any(counts):
        width = report["similarity_histogram"]["bin_width"]
        lines.append("similarity of the best match:")
        scale = 40 / max(counts)
        lines += [f"  {i * width:4.0%}-{(i + 1) * width:4.0%} {'#' * math.ceil(count * scale):<40} {count}"
                  for i, count in enumerate(counts) if count]
    if report["per_hour"]:
        lines.append("answers per hour (UTC):")
        lines += [f"  {hour.replace('T', ' ')}:00  {count}" for hour, count in report["per_hour"].items()]
    return lines


def stats_png(report: dict) -> bytes:
    """A picture of the report: the similarity histogram, and the rank-frequency curve of best matches."""
    plt = require_matplotlib("stats")
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    counts, width = report["similarity_histogram"]["counts"], report["similarity_histogram"]["bin_width"]
    left.bar([i * width for i in range(len(counts))], counts, width=width, align="edge", edgecolor="white")
    left.set_xlabel("similarity of the best match")
    left.set_ylabel("faces")
    left.set_xlim(0, 1)
    left.set_title(f"{report['faces']} faces answered")
    ranks = report["rank_frequency"]
    coverage = report["coverage"]
    if ranks:
        right.plot(range(1, len(ranks) + 1), ranks, marker=".", linestyle="-")
        right.axhline(report["faces"] / coverage["people"], color="grey", linestyle=":",
                      label=f"every person alike: {report['faces']} / {coverage['people']}")
        right.set_xlim(0.8, coverage["people"] * 1.25)
        right.set_xscale("log")
        right.set_yscale("log")
        right.legend()
    right.set_xlabel("rank of the person")
    right.set_ylabel("times the best match")
    right.set_title(f"{coverage['matched']} of {coverage['people']} people matched ({coverage['share']:.0%})")
    return png_bytes(plt, figure)
