"""The ``lookalike`` command: parses options, calls the stage functions, prints their summaries.

Heavy libraries (dlib, nmslib, pyarrow, numpy) are imported inside the commands, so ``--help`` is instant.
"""

from __future__ import annotations

import json
import logging
import sys
from functools import wraps
from pathlib import Path

import click

from .config import field_type, section_fields
from .errors import LookalikeError

log = logging.getLogger("lookalike_cli")

DLIB_SECTIONS = ("runtime", "detect", "image")  # the commands that read images with dlib's models
POOL_KEYS = ("executor", "ray_address")  # runtime keys of the commands that run dlib work in workers


class LookalikeGroup(click.Group):
    """Turns errors into one line on stderr and a non-zero exit; -v shows tracebacks."""

    def main(self, args=None, prog_name=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, standalone_mode=False, **extra)
        except click.UsageError as exc:
            hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
            click.echo(f"Error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LookalikeError as exc:
            if ctx.meta.get("lookalike.verbose", 0) >= 2:
                raise
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted: what was done is saved; run the same command again to resume.", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            if ctx.meta.get("lookalike.verbose", 0):
                raise
            click.echo(f"Error: unexpected {type(exc).__name__}: {exc} (run with -v for the traceback)", err=True)
            ctx.exit(1)


def config_options(*sections: str, skip: tuple[str, ...] = ()):
    """Add one option per key of the given config sections (``filter.max_tilt`` -> ``--max-tilt``), but for the
    keys in ``skip`` (those the command does not use)."""
    def decorate(command):
        for section in reversed(sections):
            for f in reversed([f for f in section_fields(section) if f.name not in skip]):
                meta, flag = f.metadata, f.name.replace("_", "-")
                switch = field_type(f) is bool  # --flag/--no-flag
                one_of = meta["choices"] and not meta["several"]
                click_type = None if switch else click.Choice(meta["choices"]) if one_of else field_type(f)
                command = click.option(f"--{flag}/--no-{flag}" if switch else f"--{flag}", f.name, type=click_type,
                                       default=None,
                                       help=f"{meta['help'][0].upper()}{meta['help'][1:]} [{section}.{f.name}, "
                                            f"default: {f.default!r}]")(command)
        return click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                            envvar="LOOKALIKE_CONFIG",
                            help="TOML file with settings (see configs/default.toml); options override it.")(command)
    return decorate


def with_config(command):
    """Replace the config options of a command by one ``config`` argument."""
    @wraps(command)
    def wrapper(config_path, **kwargs):
        from .config import SECTIONS, load_config

        known = {f.name for section in SECTIONS for f in section_fields(section)}
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in known}
        return command(config=load_config(config_path, overrides), **kwargs)
    return wrapper


data_dir_option = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), required=True, envvar="LOOKALIKE_DATA_DIR",
    help="Folder of the gallery's artifacts (env LOOKALIKE_DATA_DIR).")
images_option = click.option(
    "--images", "images_dir", type=click.Path(path_type=Path), required=True,
    help="Gallery photos: DIR/<alias>/*.jpg, or DIR/<alias>.jpg for one photo each.")
catalog_option = click.option(
    "--catalog", type=click.Path(path_type=Path), default=None,
    help='People as JSON: [{"name", "alias", "role", "n_movies"}, ...]; without it the alias is the name.')


@click.group(cls=LookalikeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv: debug, and tracebacks).")
@click.version_option(package_name="lookalike")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """Which celebrity do you look like? Build a face gallery offline, then query it with photos.

    \b
    lookalike build --images photos/ --catalog people.json --data-dir data/
    lookalike query me.jpg --data-dir data/
    """
    ctx.meta["lookalike.verbose"] = verbose
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def print_filter(summary) -> None:
    click.echo(f"filter: {summary.accepted} of {summary.images} images accepted "
               f"({summary.detected} detected now), {summary.people_with_faces} of {summary.people} people "
               "have a usable face")
    for reason, count in summary.reasons.items():
        click.echo(f"  rejected {reason}: {count}")
    print_nodes("detected", summary.nodes)


def print_nodes(done: str, nodes: dict[str, int]) -> None:
    """The images each node of a Ray cluster did."""
    if nodes:
        click.echo(f"  {done} on " + ", ".join(f"{node}: {count}" for node, count in sorted(nodes.items())))


def print_embed(summary) -> None:
    click.echo(f"embed: {summary.faces} face descriptors of {summary.people} people "
               f"({summary.computed} computed now, {summary.failed} failed)")
    print_nodes("computed", summary.nodes)


def print_clean(summary) -> None:
    people = ", ".join(f"{count} {status}" for status, count in summary.people.items())
    click.echo(f"clean: {summary.kept} of {summary.photos} photos kept ({summary.rejected} rejected "
               f"other_identity); people: {people}; index holds {summary.gallery_vectors} vectors")
    if summary.no_agreement:
        shown = ", ".join(summary.no_agreement[:10]) + (", ..." if len(summary.no_agreement) > 10 else "")
        click.echo(f"  photos do not agree: {shown}")


def print_calibration(calibration) -> None:
    click.echo(f"calibrate: nearest other person at {calibration.mean:.3f} +- {calibration.std:.3f} "
               f"over {calibration.count} photos")


def print_index(summary) -> None:
    click.echo(f"index: {summary.backend} over {summary.vectors} vectors in {summary.seconds:.1f} s, "
               f"published as generation {summary.generation}")


def print_crawl(summary) -> None:
    click.echo(f"crawl: {summary.complete} of {summary.people} people complete, {summary.partial} partial, "
               f"{summary.empty} empty ({summary.already_complete} were complete before this run)")
    for status, count in summary.statuses.items():
        click.echo(f"  {status}: {count}")


@cli.command("crawl")
@click.option("--catalog", type=click.Path(path_type=Path), required=True,
              help='People as JSON: [{"name", "alias"}, ...]; the search engines are asked for the name.')
@click.option("--urls", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="For --engine urls: a CSV or Parquet file with columns alias,url.")
@data_dir_option
@config_options("crawl", "image")
@with_config
def crawl_command(catalog: Path, urls: Path | None, data_dir: Path, config) -> None:
    """Download photos of every catalog person into DATA_DIR/images/<alias>/, resumably.

    Every attempted URL is a row of DATA_DIR/crawl.parquet with its status; a re-run skips people who have
    --per-person photos. Next: lookalike build --images DATA_DIR/images --data-dir DATA_DIR.
    """
    from .crawl.run import crawl

    print_crawl(crawl(catalog, data_dir, config, urls=urls))


@cli.command("filter")
@images_option
@catalog_option
@data_dir_option
@config_options(*DLIB_SECTIONS, "filter")
@with_config
def filter_command(images_dir: Path, catalog: Path | None, data_dir: Path, config) -> None:
    """Keep gallery photos with one usable face; record every rejection and its reason."""
    from .stages.filter import filter_images

    print_filter(filter_images(images_dir, data_dir, catalog, config))


@cli.command("embed")
@data_dir_option
@config_options("runtime", "image", "embed")
@with_config
def embed_command(data_dir: Path, config) -> None:
    """Compute a 128-d face descriptor for every accepted photo."""
    from .stages.embed import embed_faces

    print_embed(embed_faces(data_dir, config))


@cli.command("clean")
@data_dir_option
@config_options("clean")
@with_config
def clean_command(data_dir: Path, config) -> None:
    """Keep each person's photos that show the same face; choose what the index holds."""
    from .stages.clean import clean_identities

    print_clean(clean_identities(data_dir, config))


@cli.command("calibrate")
@data_dir_option
@config_options("calibrate")
@with_config
def calibrate_command(data_dir: Path, config) -> None:
    """Measure how far a stranger's best match is, to turn distances into percents."""
    from .stages.calibrate import calibrate

    print_calibration(calibrate(data_dir, config))


@cli.command("index")
@data_dir_option
@config_options("runtime", "index", skip=("models_dir", "descriptor_backend", *POOL_KEYS))
@with_config
def index_command(data_dir: Path, config) -> None:
    """Build the nearest-neighbour index and publish the gallery to queries in one step."""
    from .stages.index import build_index

    print_index(build_index(data_dir, config))


@cli.command("build")
@images_option
@catalog_option
@data_dir_option
@config_options(*DLIB_SECTIONS, "filter", "embed", "clean", "calibrate", "index")
@with_config
def build_command(images_dir: Path, catalog: Path | None, data_dir: Path, config) -> None:
    """Run filter, embed, clean, calibrate and index: a searchable gallery from a folder of photos."""
    from .stages.build import build

    summary = build(images_dir, data_dir, catalog, config)
    print_filter(summary.filter)
    print_embed(summary.embed)
    print_clean(summary.clean)
    print_calibration(summary.calibration)
    print_index(summary.index)


@cli.command("eval")
@images_option
@click.option("--distractors", "distractors_dir", type=click.Path(path_type=Path), default=None,
              help="More people for the gallery, without probes (DIR/<alias>.jpg or DIR/<alias>/*.jpg).")
@click.option("--skip-distractor", "skip_distractors", multiple=True,
              help="A distractor alias that is one of the labelled people under another name (repeatable).")
@click.option("--intruders", type=click.IntRange(0, 100), default=0,
              help="Photos of other people put into each probed person's gallery folder: a dirty crawl.")
@click.option("--seed", type=int, default=0, help="Seed of the gallery/probe split and of the intruders.")
@click.option("--degrade", "degradations", multiple=True,
              help="Also answer the probes degraded, e.g. shrink:160,jpeg:35 (steps: shrink:PX, jpeg:QUALITY, "
                   "blur:RADIUS, rotate:DEGREES, dark:FACTOR, gray), with the detection fallback off and on "
                   "(repeatable).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("eval-results"),
              help="Folder for eval.json and eval.png.")
@config_options(*DLIB_SECTIONS, "filter", "embed", "clean", "calibrate", "index", "query")
@with_config
def eval_command(images_dir: Path, distractors_dir: Path | None, skip_distractors: tuple[str, ...],
                 intruders: int, seed: int, degradations: tuple[str, ...], out_dir: Path, config) -> None:
    """Measure identification and verification on labelled photos (DIR/<person>/*.jpg).

    Each person's photos are split into gallery and probes, the gallery is built in a temporary folder with
    the current settings, and the probes are answered like queries.
    """
    from .evaluation.evaluate import evaluate, format_report

    report = evaluate(images_dir, out_dir, distractors_dir, seed, intruders, skip_distractors, config,
                      degradations)
    for line in format_report(report):
        click.echo(line)
    click.echo(f"wrote {out_dir / 'eval.json'} and {out_dir / 'eval.png'}")


STDIN = Path("-")


def standard_input(policy):
    """The bytes of standard input (a photo given as ``-``), at most ``policy.max_file_bytes``; a PhotoResult
    with the reason when there are more."""
    from .answers.results import PhotoResult
    from .imaging.decode import ImageRejected, read_capped

    try:
        return read_capped(sys.stdin.buffer, policy.max_file_bytes)
    except ImageRejected as exc:
        return PhotoResult.rejected("-", exc)


def answer_photo(engine, photo: Path, stdin, picture: bool):
    """The answer (and with ``picture`` its PNG) for one PHOTO argument: a file, or ``-`` with the bytes (or the
    rejection) of standard input."""
    if photo != STDIN:
        return engine.answer_file(photo, picture)
    return engine.answer_bytes(stdin, "-", picture) if isinstance(stdin, bytes) else (stdin, None)


def check_new_file(path: Path | None) -> None:
    """Refuse an output path that exists and is not a regular file (a link, a device, a folder): it is written
    by temp file and rename, which would replace the link or device itself."""
    if path is not None and (path.is_symlink() or (path.exists() and not path.is_file())):
        raise LookalikeError(f"{path} exists and is not a regular file: give a new file name, or a regular file "
                             "to replace")


def format_photo(result) -> list[str]:
    """Human lines for one photo's result (one line per match, whatever the file's name holds)."""
    from .io.catalog import display_name, escaped

    photo = escaped(result.photo)
    if result.error:
        return [f"{photo}: cannot read the image ({result.error})"]
    if not result.faces:
        return [f"{photo}: no face found"]
    return [f"{photo} face {number}: {display_name(match.name)} {match.similarity:.0%} "
            f"(distance {match.distance:.2f}{found_by(face.detector)})"
            for number, face in enumerate(result.faces, 1) for match in face.matches]


def found_by(detector: str) -> str:
    """How a face line names the detection fallback's look that found the face (nothing for HOG's first look)."""
    from .face.models import FALLBACK_LOOKS

    return f", found by the fallback: {detector}" if detector in FALLBACK_LOOKS else ""


@cli.command("query")
@click.argument("photos", nargs=-1, required=True, type=click.Path(path_type=Path))
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also draw the answer as a PNG: each face beside its best match, name and percent (one PHOTO).")
@config_options(*DLIB_SECTIONS, "query", "answers", skip=("workers", *POOL_KEYS))
@with_config
def query_command(photos: tuple[Path, ...], data_dir: Path, as_json: bool, out: Path | None, config) -> None:
    """Find the people of the gallery who look most like the faces in PHOTOS (- reads one from standard input).

    Exits with status 1 when a photo has no face or cannot be read.
    """
    from .answers.log import query_files
    from .answers.query import Lookalike

    if out is not None and len(photos) != 1:
        raise LookalikeError(f"--out draws the answer for one photo, but {len(photos)} were given")
    check_new_file(out)
    engine = Lookalike(data_dir, config)
    stdin = standard_input(config.image) if STDIN in photos else None
    answers = query_files(engine, photos, config.answers,
                          lambda photo: answer_photo(engine, photo, stdin, picture=out is not None))
    results = [result for result, _ in answers]
    picture = answers[0][1]
    if out is not None and picture is not None:
        from .files import write_bytes

        check_new_file(out)
        write_bytes(out, picture)
    if as_json:
        click.echo(json.dumps({"photos": [result.to_json() for result in results]}, indent=2))
    else:
        for result in results:
            for line in format_photo(result):
                click.echo(line)
    failed = [result for result in results if result.error or not result.faces]
    if failed:
        if as_json:
            for result in failed:
                click.echo(format_photo(result)[0], err=True)
        sys.exit(1)


SERVING_SECTIONS = (*DLIB_SECTIONS, "query", "serve", "answers")


@cli.command("serve")
@data_dir_option
@config_options(*SERVING_SECTIONS)
@with_config
def serve_command(data_dir: Path, config) -> None:
    """Answer photos over HTTP: POST /query (JSON, or ?format=png), GET /healthz, GET /stats; GET / is a web
    page where people take or upload a selfie (--no-page: the API alone), GET /people/ALIAS/photo a person's photo.

    \b
    curl --data-binary @me.jpg http://127.0.0.1:8000/query
    curl -F photo=@me.jpg 'http://127.0.0.1:8000/query?format=png' -o answer.png
    """
    from .serving.api import serve

    serve(data_dir, config, on_ready=lambda url: click.echo(
        f"lookalike: answering photos of {data_dir} on {url}/query (Ctrl-C stops)"))


@cli.command("bot")
@data_dir_option
@config_options(*SERVING_SECTIONS, "bot")
@with_config
def bot_command(data_dir: Path, config) -> None:
    """Run the Telegram bot: it answers a photo with its lookalike, percent and picture.

    The token comes from the LOOKALIKE_BOT_TOKEN environment variable. The bot polls Telegram, or with
    --webhook-url it registers that webhook and listens for it on --host and --port.
    """
    from .serving.bot import bot_token, run_bot

    token = bot_token()
    run_bot(data_dir, config, token, on_ready=lambda how: click.echo(f"lookalike bot: {how} (Ctrl-C stops)"))


@cli.command("stats")
@click.option("--log", "logs", type=click.Path(dir_okay=False, path_type=Path), multiple=True, required=True,
              help="An answer log of serve, bot or query --log (repeatable: FILE, FILE.1 ...).")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also draw the similarity histogram and the rank-frequency curve into this PNG.")
@click.option("--top", type=click.IntRange(1, 100_000), default=10, help="How many of the most frequent best "
              "matches to list.")
def stats_command(logs: tuple[Path, ...], data_dir: Path, as_json: bool, png: Path | None, top: int) -> None:
    """What the public got: coverage of the gallery, most frequent and never matched people, hubs.

    Reads answer logs (answers.log) and measures them against the current gallery of DATA_DIR.
    """
    from .answers.stats import answer_stats, format_stats, stats_png
    from .files import write_bytes

    check_new_file(png)
    report = answer_stats(logs, data_dir, top)
    if png is not None:
        write_bytes(png, stats_png(report))
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for line in format_stats(report):
            click.echo(line)


@cli.command("info")
def info_command() -> None:
    """Show which dlib, descriptor backend and nmslib this installation runs, and how many cores it sees."""
    from importlib import metadata

    from .face.descriptors import descriptor_backend, dlib_build_info
    from .runtime.pool import resolve_workers

    dlib = dlib_build_info()
    click.echo(f"lookalike {metadata.version('lookalike')}, Python {sys.version.split()[0]}, "
               f"{resolve_workers(0)} cores")
    click.echo(f"dlib {dlib['version']}: BLAS {'on' if dlib['blas'] else 'off'}, "
               f"AVX {'on' if dlib['avx'] else 'off'}")
    backend = descriptor_backend()
    click.echo(f"descriptors: {backend}" + (" (dlib's network on numpy's BLAS, checked against dlib)"
                                            if backend == "numpy" else ""))
    click.echo(f"nmslib {metadata.version('nmslib')}")
    if backend == "dlib" and not dlib["blas"]:
        click.echo("dlib without BLAS computes descriptors about 5x slower (see benchmarks/RESULTS.md); "
                   "`make dlib-blas` builds and installs one with OpenBLAS")


def main() -> None:
    cli(prog_name="lookalike")
