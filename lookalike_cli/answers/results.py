"""A photo's answer: its faces, each face's nearest people, or why the photo could not be used."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Mapping

from ..imaging.decode import ImageReason, ImageRejected


@dataclass(frozen=True)
class Match:
    alias: str
    name: str
    distance: float
    similarity: float
    image: str


@dataclass(frozen=True)
class FaceResult:
    box: list[int]
    matches: list[Match]
    detector: str = "hog"  # which look of the detection chain found the face (models.Face.detector)


@dataclass(frozen=True)
class PhotoResult:
    """A photo's answer: its faces (the ``query.max_faces`` largest, left to right) and how many smaller faces
    were left out; or, for a photo that could not be used, the ``reason`` (``ImageReason``) and its detail."""

    photo: str
    faces: list[FaceResult] = field(default_factory=list)
    faces_left_out: int = 0
    reason: ImageReason | None = None
    detail: str = ""
    fallback_busy: bool = False  # HOG found no face and the detection fallback was not free to look again

    @classmethod
    def rejected(cls, photo: str, rejection: ImageRejected) -> PhotoResult:
        return cls(photo=photo, reason=rejection.reason, detail=rejection.detail)  # type: ignore[arg-type]

    def named(self, names: Mapping[str, str]) -> PhotoResult:
        """This answer with each match called as ``names`` (alias -> name, of a language) calls them, where it
        does."""
        if not names:
            return self
        return replace(self, faces=[replace(face, matches=[replace(match, name=names.get(match.alias, match.name))
                                                            for match in face.matches]) for face in self.faces])

    @property
    def error(self) -> str | None:
        """"reason: detail" of a photo that could not be used."""
        return f"{self.reason}: {self.detail}" if self.reason else None

    def to_json(self, photo_url: Callable[[str], str] | None = None) -> dict:
        """As ``query --json`` prints it: ``photo`` and ``faces``; ``faces_left_out`` when some were;
        ``fallback_busy`` when no face was found but the fallback could not look (try again);
        ``error`` ("reason: detail") and ``reason`` for a photo that could not be used. With ``photo_url``
        (alias -> URL), each match has ``photo_url`` instead of ``image``, a path on this machine (for answers
        sent to others)."""
        result: dict = {"photo": self.photo, "faces": [asdict(face) for face in self.faces]}
        if self.faces_left_out:
            result["faces_left_out"] = self.faces_left_out
        if self.fallback_busy:
            result["fallback_busy"] = True
        if self.reason:
            result |= {"error": self.error, "reason": self.reason}
        if photo_url is not None:
            for face in result["faces"]:
                for match in face["matches"]:
                    del match["image"]
                    match["photo_url"] = photo_url(match["alias"])
        return result
