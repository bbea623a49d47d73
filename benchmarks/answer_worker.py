"""One source tree's recognition worker, for bench_answer.py: loads a gallery as a `serve` worker does, then for
each JSON line on standard input ({"path", "repeat"}) answers that photo's bytes ``repeat`` times with the
worker's own function (recognizer.recognize_photo) and writes a JSON line: the seconds of each answer, and per
face its box, top-1 alias and the look that found it.

Run with PYTHONPATH set to the tree (common.tree_env); it imports nothing else of the benchmarks, so that each
tree runs its own code.
"""

import json
import sys
import time
from pathlib import Path

try:
    from lookalike_cli.answers import query, recognizer
except ImportError:  # a tree from before the package had wings
    from lookalike_cli import query, recognizer  # type: ignore[no-redef]


def main() -> None:
    recognizer._engine = query.Lookalike(sys.argv[1])
    recognizer._engine.models  # loaded before the first photo, as load_engine does
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        data = Path(request["path"]).read_bytes()
        seconds = []
        for _ in range(request["repeat"]):
            started = time.perf_counter()
            result, _ = recognizer.recognize_photo(data, "photo", False)
            seconds.append(time.perf_counter() - started)
        faces = [{"box": list(face.box), "top1": face.matches[0].alias if face.matches else None,
                  "detector": face.detector} for face in result.faces]
        print(json.dumps({"seconds": seconds, "faces": faces, "reason": result.reason}), flush=True)


if __name__ == "__main__":
    main()
