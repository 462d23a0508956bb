"""TSP instances: seeded generators, the Kool et al. test sets, text and TSPLIB I/O.

Paper section 5 (Graikos et al. 2022) works on Euclidean TSP with cities uniform in the
unit square. Conventions used by every module of :mod:`landprior.tasks.tsp`:

* ``points`` is float64 ``(n, 2)`` (one instance) or ``(B, n, 2)`` (a batch), in ``[0, 1]^2``.
* a ``tour`` is a 0-indexed permutation of ``range(n)`` of shape ``(n,)`` / ``(B, n)``;
  it is closed implicitly (the edge ``tour[-1] -> tour[0]`` belongs to it).
* The text format (Kool et al., Joshi et al., DIFUSCO) has one instance per line:
  ``x1 y1 x2 y2 ... xn yn output t1 t2 ... tn t1`` with a 1-indexed *closed* tour; the
  ``output ...`` part is optional.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

logger = logging.getLogger(__name__)

DuplicatePolicy = Literal["error", "warn", "skip"]
DUPLICATE_POLICIES: tuple[str, ...] = get_args(DuplicatePolicy)

MIN_CITIES = 4
KOOL_TEST_SEED = 1234
KOOL_TEST_SIZE = 10_000
_UNIT_TOL = 1e-9


class TSPDataError(ValueError):
    """Malformed or unusable TSP input; the message names the file, line and value."""


class DuplicateCitiesError(TSPDataError):
    """An instance repeats a city (two identical coordinate pairs)."""


@dataclass(frozen=True, eq=False)
class TSPInstance:
    """One instance: ``points`` (n, 2) float64 in [0, 1]^2 and an optional tour (n,) int64.

    ``where`` says where it came from (``file:line``) for error messages; ``scale`` and
    ``offset`` undo a normalisation to the unit square: ``original = points * scale + offset``
    (so a length in the original units is ``length * scale``).
    """

    points: np.ndarray
    tour: np.ndarray | None = None
    where: str = ""
    scale: float = 1.0
    offset: tuple[float, float] = (0.0, 0.0)

    @property
    def n(self) -> int:
        """Number of cities."""
        return int(self.points.shape[0])

    @property
    def original_points(self) -> np.ndarray:
        """The cities in the units they were read in (``points * scale + offset``)."""
        return self.points * self.scale + np.asarray(self.offset, dtype=np.float64)


# --------------------------------------------------------------------------- generators
def uniform_instances(count: int, n: int, seed: int | None = 0) -> np.ndarray:
    """``count`` instances of ``n`` cities uniform in [0, 1]^2 (paper section 5): (count, n, 2).

    Uses ``numpy.random.default_rng(seed)``; the same seed always gives the same points.
    """
    _check_count_n(count, n)
    rng = np.random.default_rng(seed)
    return rng.uniform(size=(count, n, 2))


def kool_test_set(n: int, count: int | None = None) -> np.ndarray:
    """The Kool et al. (2019) TSP test set of size ``n``, regenerated exactly: (count, n, 2).

    Kool et al. draw ``np.random.seed(1234); np.random.uniform(size=(10000, n, 2))``. The
    legacy generator fills the array in C order, so the first ``count`` instances are the
    first ``count`` of the full set and are drawn without generating the rest. The global
    numpy random state is left untouched.
    """
    count = KOOL_TEST_SIZE if count is None else count
    _check_count_n(count, n)
    if count > KOOL_TEST_SIZE:
        raise ValueError(
            f"the Kool et al. test sets have {KOOL_TEST_SIZE} instances, asked for {count}"
        )
    return np.random.RandomState(KOOL_TEST_SEED).uniform(size=(count, n, 2))


def _check_count_n(count: int, n: int) -> None:
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if n < MIN_CITIES:
        raise ValueError(f"a TSP instance needs at least {MIN_CITIES} cities, got n={n}")


# --------------------------------------------------------------------------- lengths
def tour_lengths(points: np.ndarray, tours: np.ndarray) -> np.ndarray:
    """Lengths of closed tours, vectorised over a batch.

    Args:
        points: (B, n, 2) or (n, 2) coordinates.
        tours: (B, n) or (n,) permutations (the closing edge is implied).

    Returns:
        (B,) float64 lengths (a 0-d array for a single instance).
    """
    pts = np.asarray(points, dtype=np.float64)
    idx = np.asarray(tours, dtype=np.int64)
    if pts.ndim == 2:
        return tour_lengths(pts[None], idx[None])[0]
    if pts.ndim != 3 or idx.shape != pts.shape[:2]:
        raise ValueError(
            f"expected points (B, n, 2) and tours (B, n), got {pts.shape} and {idx.shape}"
        )
    ordered = np.take_along_axis(pts, idx[..., None], axis=1)
    steps = ordered - np.roll(ordered, -1, axis=1)
    return np.sqrt((steps**2).sum(-1)).sum(-1)


def input_unit_lengths(lengths: np.ndarray, instances: Sequence[TSPInstance]) -> np.ndarray:
    """Tour lengths measured on the unit-square ``points``, in each instance's input units.

    ``original_points = points * scale + offset`` is a shift and a uniform scaling, so a
    tour's length on the original points is its unit-square length times ``scale``.

    Args:
        lengths: (B,) lengths on ``instances[k].points``.
        instances: the B instances, in the same order.

    Returns:
        (B,) float64 lengths in the units the instances were read in.
    """
    unit = np.asarray(lengths, dtype=np.float64)
    if unit.shape != (len(instances),):
        raise ValueError(f"expected {len(instances)} lengths, got shape {unit.shape}")
    return unit * np.array([inst.scale for inst in instances], dtype=np.float64)


def gap_pct(lengths: np.ndarray, reference: np.ndarray) -> float:
    """The paper's optimality gap (Table 2): ``sum(lengths) / sum(reference) - 1``, in percent."""
    total_ref = float(np.sum(reference))
    if not np.isfinite(total_ref) or total_ref <= 0:
        raise ValueError(f"reference lengths must sum to a positive number, got {total_ref}")
    return 100.0 * (float(np.sum(lengths)) / total_ref - 1.0)


def distance_matrices(points: np.ndarray) -> np.ndarray:
    """Euclidean distance matrices (B, n, n) float64 of (B, n, 2) points (or (n, n) of (n, 2))."""
    pts = np.asarray(points, dtype=np.float64)
    x, y = pts[..., 0], pts[..., 1]
    dx = x[..., :, None] - x[..., None, :]
    dy = y[..., :, None] - y[..., None, :]
    return np.sqrt(dx * dx + dy * dy)


def is_permutation(tour: np.ndarray, n: int) -> bool:
    """True when ``tour`` is a permutation of ``range(n)``."""
    t = np.asarray(tour)
    if t.shape != (n,) or not np.issubdtype(t.dtype, np.integer):
        return False
    seen = np.zeros(n, dtype=bool)
    if t.min(initial=0) < 0 or t.max(initial=0) >= n:
        return False
    seen[t] = True
    return bool(seen.all())


# --------------------------------------------------------------------------- validation
def check_points(
    points: np.ndarray, where: str = "<points>", *, duplicates: DuplicatePolicy = "error"
) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Validate one instance's points and bring them into the unit square.

    Raises :class:`TSPDataError` (naming ``where``) for fewer than 4 cities and non-finite
    values, :class:`DuplicateCitiesError` for repeated cities unless ``duplicates="warn"``
    (then they are kept, with a warning). Points outside [0, 1]^2
    are shifted and scaled uniformly (aspect ratio kept) into the unit square and a warning
    says so.

    Returns:
        (points (n, 2) float64, scale, offset) with ``original = points * scale + offset``.
    """
    if duplicates not in DUPLICATE_POLICIES:
        raise ValueError(f"duplicates must be one of {DUPLICATE_POLICIES}, got {duplicates!r}")
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise TSPDataError(f"{where}: expected points of shape (n, 2), got {pts.shape}")
    n = pts.shape[0]
    if n < MIN_CITIES:
        raise TSPDataError(f"{where}: a TSP instance needs at least {MIN_CITIES} cities, got {n}")
    if not np.isfinite(pts).all():
        bad = int(np.argwhere(~np.isfinite(pts).all(1))[0, 0])
        raise TSPDataError(f"{where}: city {bad + 1} has a non-finite coordinate {pts[bad]}")
    uniq, first, counts = np.unique(pts, axis=0, return_index=True, return_counts=True)
    if len(uniq) < n:
        n_dup = n - len(uniq)
        example = int(first[np.argmax(counts > 1)])
        msg = (
            f"{where}: {n_dup} duplicate cities (e.g. city {example + 1} at "
            f"({pts[example, 0]:.6g}, {pts[example, 1]:.6g}) repeats); expected distinct points"
        )
        if duplicates != "warn" or len(uniq) < MIN_CITIES:
            raise DuplicateCitiesError(msg)
        logger.warning("%s; kept as given (zero-length edges)", msg)
    scale, offset = 1.0, (0.0, 0.0)
    lo, hi = pts.min(0), pts.max(0)
    if (lo < -_UNIT_TOL).any() or (hi > 1 + _UNIT_TOL).any():
        extent = float((hi - lo).max())
        scale = extent if extent > 0 else 1.0
        offset = (float(lo[0]), float(lo[1]))
        pts = (pts - lo) / scale
        logger.warning(
            "%s: points lie outside the unit square (x in [%.6g, %.6g], y in [%.6g, %.6g]); "
            "normalised to [0, 1]^2 keeping the aspect ratio (shift by (%.6g, %.6g), "
            "divide by %.6g)",
            where,
            lo[0],
            hi[0],
            lo[1],
            hi[1],
            lo[0],
            lo[1],
            scale,
        )
    return np.clip(pts, 0.0, 1.0), scale, offset


# --------------------------------------------------------------------------- text format
def parse_line(
    line: str, where: str = "<line>", *, duplicates: DuplicatePolicy = "error"
) -> TSPInstance:
    """Parse one line ``x1 y1 ... xn yn [output t1 ... tn t1]`` (1-indexed closed tour)."""
    tokens = line.split()
    try:
        cut = tokens.index("output")
    except ValueError:
        cut = len(tokens)
    coords, tour_tokens = tokens[:cut], tokens[cut + 1 :]
    if len(coords) % 2:
        raise TSPDataError(
            f"{where}: odd number of coordinates ({len(coords)}); expected pairs 'x y'"
        )
    values = np.empty(len(coords), dtype=np.float64)
    for k, token in enumerate(coords):
        try:
            values[k] = float(token)
        except ValueError:
            raise TSPDataError(
                f"{where}: coordinate {k + 1} is {token!r}; expected a number "
                "(format 'x1 y1 ... xn yn output t1 ... tn t1')"
            ) from None
    points, scale, offset = check_points(values.reshape(-1, 2), where, duplicates=duplicates)
    tour = None
    if cut < len(tokens):
        tour = _parse_tour_tokens(tour_tokens, points.shape[0], where)
    return TSPInstance(points=points, tour=tour, where=where, scale=scale, offset=offset)


def _parse_tour_tokens(tokens: Sequence[str], n: int, where: str) -> np.ndarray:
    try:
        tour = np.array([int(t) for t in tokens], dtype=np.int64)
    except ValueError:
        bad = next(t for t in tokens if not re.fullmatch(r"[+-]?\d+", t))
        raise TSPDataError(
            f"{where}: tour entry {bad!r} is not an integer; expected 1-indexed city numbers"
        ) from None
    if len(tour) == n + 1 and tour[0] == tour[-1]:
        tour = tour[:-1]
    if len(tour) != n:
        raise TSPDataError(
            f"{where}: tour has {len(tokens)} entries for {n} cities; expected {n + 1} "
            "(a closed tour t1 ... tn t1)"
        )
    tour = tour - 1
    if not is_permutation(tour, n):
        raise TSPDataError(
            f"{where}: tour is not a permutation of the cities 1..{n} (1-indexed, each once)"
        )
    return tour


def read_instances(
    path: str | Path, *, limit: int | None = None, duplicates: DuplicatePolicy = "error"
) -> list[TSPInstance]:
    """Read the text format, one instance per non-empty line (``#`` lines are comments), or
    a TSPLIB ``.tsp`` file (one instance; its ``.opt.tour`` / ``.tour`` beside it is read too).

    Every error names ``path:line``. ``limit`` stops after that many instances.
    ``duplicates``: ``"error"`` rejects an instance with repeated cities, ``"warn"`` keeps
    it (zero-length edges), ``"skip"`` leaves it out with a warning.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no TSP instance file at {path}")
    if path.suffix.lower() == ".tsp":  # one TSPLIB instance, with its optimal tour if beside
        tours = [path.with_suffix(".opt.tour"), path.with_suffix(".tour")]
        tour = next((t for t in tours if t.is_file()), None)
        return [read_tsplib(path, tour, duplicates=duplicates)]
    out: list[TSPInstance] = []
    try:
        with path.open(encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, start=1):
                if limit is not None and len(out) >= limit:
                    break
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                try:
                    out.append(parse_line(line, f"{path}:{lineno}", duplicates=duplicates))
                except DuplicateCitiesError as exc:
                    if duplicates != "skip":
                        raise
                    logger.warning("skipped %s", exc)
    except UnicodeDecodeError:
        raise TSPDataError(
            f"{path}: not a text file (expected lines 'x1 y1 ... xn yn [output t1 ... tn t1]', "
            "or a TSPLIB .tsp)"
        ) from None
    if not out:
        raise TSPDataError(f"{path}: no instances found (expected lines 'x1 y1 ... xn yn ...')")
    return out


def format_line(points: np.ndarray, tour: np.ndarray | None = None) -> str:
    """One line of the text format; ``tour`` (n,) 0-indexed is written 1-indexed and closed."""
    pts = np.asarray(points, dtype=np.float64)
    text = " ".join(repr(float(v)) for v in pts.reshape(-1))
    if tour is not None:
        t = np.asarray(tour, dtype=np.int64)
        if not is_permutation(t, pts.shape[0]):
            raise ValueError(f"tour is not a permutation of range({pts.shape[0]})")
        closed = np.append(t, t[0]) + 1
        text += " output " + " ".join(str(int(v)) for v in closed)
    return text


def write_instances(
    path: str | Path,
    points: Iterable[np.ndarray],
    tours: Iterable[np.ndarray | None] | None = None,
) -> Path:
    """Write instances (each (n, 2)) and optional tours (each (n,)) in the text format.

    Floats are written with ``repr`` so a read-back is bit-exact. The file is written to a
    temporary name and renamed, so a reader never sees a half-written file.
    """
    path = Path(path)
    pts_list = list(points)
    tour_list = [None] * len(pts_list) if tours is None else list(tours)
    if len(tour_list) != len(pts_list):
        raise ValueError(f"{len(pts_list)} instances but {len(tour_list)} tours")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as handle:
        for pts, tour in zip(pts_list, tour_list, strict=True):
            handle.write(format_line(pts, tour) + "\n")
    tmp.replace(path)
    return path


def group_by_size(instances: Sequence[TSPInstance]) -> dict[int, list[int]]:
    """Indices of ``instances`` grouped by city count, so batched code sees equal n."""
    groups: dict[int, list[int]] = {}
    for k, inst in enumerate(instances):
        groups.setdefault(inst.n, []).append(k)
    return groups


# --------------------------------------------------------------------------- TSPLIB
_TSPLIB_KEY = re.compile(r"^\s*([A-Z_]+)\s*:?\s*(.*?)\s*$")


def read_tsplib(
    tsp_path: str | Path,
    tour_path: str | Path | None = None,
    *,
    duplicates: DuplicatePolicy = "error",
) -> TSPInstance:
    """Read a TSPLIB ``.tsp`` (EUC_2D, NODE_COORD_SECTION) and optionally its ``.tour``.

    Coordinates are normalised to the unit square (aspect ratio kept, with a warning);
    ``scale``/``offset`` of the result map back. Lengths here are Euclidean on the floats,
    not TSPLIB's rounded ``nint`` distances.
    """
    tsp_path = Path(tsp_path)
    header, section = _read_tsplib_sections(tsp_path, "NODE_COORD_SECTION")
    kind = header.get("EDGE_WEIGHT_TYPE", ("", 0))
    if kind[0] not in ("EUC_2D", "CEIL_2D", ""):
        raise TSPDataError(
            f"{tsp_path}:{kind[1]}: EDGE_WEIGHT_TYPE {kind[0]!r} is not supported; expected EUC_2D"
        )
    dimension = _tsplib_int(header, "DIMENSION", tsp_path)
    coords: list[tuple[float, float]] = []
    for lineno, line in section:
        parts = line.split()
        if len(parts) != 3:
            raise TSPDataError(
                f"{tsp_path}:{lineno}: expected 'index x y' in NODE_COORD_SECTION, got {line!r}"
            )
        try:
            coords.append((float(parts[1]), float(parts[2])))
        except ValueError:
            raise TSPDataError(
                f"{tsp_path}:{lineno}: coordinates {parts[1]!r} {parts[2]!r} are not numbers"
            ) from None
    if dimension is not None and len(coords) != dimension:
        raise TSPDataError(
            f"{tsp_path}: DIMENSION says {dimension} cities but NODE_COORD_SECTION has "
            f"{len(coords)}"
        )
    points, scale, offset = check_points(np.array(coords), str(tsp_path), duplicates=duplicates)
    tour = None if tour_path is None else read_tsplib_tour(tour_path, points.shape[0])
    name = header.get("NAME", (tsp_path.stem, 0))[0]
    return TSPInstance(points, tour, where=f"{tsp_path} ({name})", scale=scale, offset=offset)


def read_tsplib_tour(path: str | Path, n: int | None = None) -> np.ndarray:
    """Read a TSPLIB ``.tour``: its first tour as a 0-indexed (n,) permutation.

    TSPLIB's TOUR_SECTION lists 1-indexed node ids, each tour ended by ``-1``. ``n`` is the
    instance's city count (else the tour's DIMENSION; else the length of the list). A tour
    must visit every node 1..n exactly once, or :class:`TSPDataError` names the file and
    the first node that is repeated, missing or out of range.

    A TOUR_SECTION without its ``-1`` usually means a truncated file (a cut download): it is
    an error, unless the list still visits all n nodes exactly once with n known from the
    instance or DIMENSION - then nothing is lost, and the tour is used with a warning.
    """
    path = Path(path)
    header, section = _read_tsplib_sections(path, "TOUR_SECTION")
    values: list[int] = []
    last_line = section[-1][0]
    terminated = False
    for lineno, line in section:
        for token in line.split():
            try:
                v = int(token)
            except ValueError:
                raise TSPDataError(
                    f"{path}:{lineno}: tour entry {token!r} is not an integer"
                ) from None
            if v == -1:
                terminated, last_line = True, lineno
                break
            values.append(v)
        if terminated:
            break
    dimension = _tsplib_int(header, "DIMENSION", path)
    if n is not None and dimension is not None and dimension != n:
        raise TSPDataError(
            f"{path}:{header['DIMENSION'][1]}: DIMENSION is {dimension} but the instance has "
            f"{n} cities; expected the tour of that instance"
        )
    known = n if n is not None else dimension
    size = known if known is not None else len(values)
    problem = _tour_problem(values, size)
    if not terminated:
        if problem is None and known is not None:
            logger.warning(
                "%s: TOUR_SECTION does not end with -1; used anyway: it visits all %d nodes "
                "once",
                path,
                size,
            )
        else:
            listed = f"{len(values)} of {size}" if known is not None else f"{len(values)}"
            raise TSPDataError(
                f"{path}: TOUR_SECTION does not end with -1 (it stops at line {last_line} "
                f"after {listed} nodes): the file looks truncated; expected node ids 1..{size} "
                "ended by -1"
            )
    elif problem is not None:
        raise TSPDataError(
            f"{path}:{last_line}: TOUR_SECTION does not visit every node 1..{size} exactly "
            f"once: {problem}"
        )
    return np.array(values, dtype=np.int64) - 1


def _tour_problem(values: Sequence[int], n: int) -> str | None:
    """Why 1-indexed ``values`` are not a permutation of 1..n (None when they are)."""
    if n < 1 or not values:
        return "it lists no nodes"
    outside = [v for v in values if not 1 <= v <= n]
    if outside:
        return f"node {outside[0]} is outside 1..{n}"
    counts = np.bincount(np.asarray(values, dtype=np.int64), minlength=n + 1)[1:]
    if (counts > 1).any():
        node = int(np.argmax(counts > 1)) + 1
        return f"node {node} appears {int(counts[node - 1])} times"
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0) + 1
        return f"{len(missing)} of {n} nodes are missing (e.g. node {int(missing[0])})"
    return None


def _read_tsplib_sections(
    path: Path, section_name: str
) -> tuple[dict[str, tuple[str, int]], list[tuple[int, str]]]:
    if not path.is_file():
        raise FileNotFoundError(f"no TSPLIB file at {path}")
    header: dict[str, tuple[str, int]] = {}
    section: list[tuple[int, str]] = []
    inside = False
    with path.open() as handle:
        for lineno, raw in enumerate(handle, start=1):
            line = raw.strip()
            if not line:
                continue
            if line == "EOF":
                break
            if inside:
                if line[0].isdigit() or line[0] in "+-.":
                    section.append((lineno, line))
                    continue
                inside = False
            if line.startswith(section_name):
                inside = True
                continue
            match = _TSPLIB_KEY.match(line)
            if match and match.group(1).isupper():
                header[match.group(1)] = (match.group(2), lineno)
    if not section:
        raise TSPDataError(f"{path}: no {section_name} found")
    return header, section


def _tsplib_int(header: dict[str, tuple[str, int]], key: str, path: Path) -> int | None:
    if key not in header:
        return None
    value, lineno = header[key]
    try:
        return int(value)
    except ValueError:
        raise TSPDataError(f"{path}:{lineno}: {key} is {value!r}; expected an integer") from None
