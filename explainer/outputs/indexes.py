"""The challenge's index of each input image, and the collisions the naming rule can produce.

Two rules (``--index-from``):

- ``name`` (default): the last run of digits in the file name (``17.png`` → 17,
  ``img_0017.jpg`` → 17, ``0000 (3).png`` → 3). Different files can share one:
  ``1.png``, ``01.png`` and ``img_1.jpg`` all give 1. Colliding images are still
  explained and recorded in results.jsonl, but none of them gets an entry in
  task1.json/task2.json: there is no right answer to which one the index means.
- ``order``: 1, 2, 3... in the order explain lists the inputs (arguments as
  given; a folder's images sorted by the number in their name, then by name).
  Never collides; stable as long as the same inputs are given (as ``--resume`` does).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from explainer.images import image_index


def assign_indexes(paths: list[Path], mode: str = "name") -> tuple[dict[Path, int | None], dict[int, list[Path]]]:
    """{path: index} and {index: paths} for every index shared by more than one path."""
    if mode == "order":
        return {p: i for i, p in enumerate(paths, start=1)}, {}
    if mode != "name":
        raise ValueError(f"unknown index rule {mode!r}")
    indexes = {p: image_index(p) for p in paths}
    groups: dict[int, list[Path]] = defaultdict(list)
    for p, i in indexes.items():
        if i is not None:
            groups[i].append(p)
    return indexes, {i: ps for i, ps in groups.items() if len(ps) > 1}


def describe_collisions(collisions: dict[int, list[Path]], shown: int = 5) -> list[str]:
    """Lines for the warning: the first few colliding groups, each naming its files."""
    from explainer.outputs.names import printable

    lines = []
    for index in sorted(collisions)[:shown]:
        names = ", ".join(printable(p.name) for p in collisions[index][:4])
        more = len(collisions[index]) - 4
        lines.append(f"index {index}: {names}{f' and {more} more' if more > 0 else ''}")
    if len(collisions) > shown:
        lines.append(f"... and {len(collisions) - shown} more shared index(es)")
    return lines
