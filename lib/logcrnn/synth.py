"""Scale-up data for speed and scale tests (never for quality claims).

``synth`` replays a real sample again and again: every replay gives each session key (e.g. an
HDFS block id) a fresh random id, consistently within the replay, and moves the timestamps
forward by the sample's time span, so the output has the sample's templates, session shapes
and anomaly rate.  A label file beside the sample (``BlockId,Label``) is replayed too, so the
fresh ids keep their original session's label.  The output is deterministic for a given seed.
"""

from __future__ import annotations

import csv
import gzip
import io
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO

from logcrnn.config import SourceSpec
from logcrnn.errors import UsageError

# Java datetime letters -> strftime, for the patterns the bundled sources use.
_JAVA_TO_PY = [
    ("yyyy", "%Y"),
    ("yy", "%y"),
    ("MMM", "%b"),
    ("MM", "%m"),
    ("dd", "%d"),
    ("HH", "%H"),
    ("mm", "%M"),
    ("ss", "%S"),
    ("SSSSSS", "%f"),
    ("SSS", "%f3"),
]


def _py_format(java: str) -> str:
    out, i = "", 0
    while i < len(java):
        for jv, py in _JAVA_TO_PY:
            if java.startswith(jv, i):
                out += py
                i += len(jv)
                break
        else:
            out += java[i]
            i += 1
    return out


def _strftime(ts: datetime, fmt: str) -> str:
    text = ts.strftime(fmt.replace("%f3", "%f"))
    if "%f3" in fmt:  # milliseconds: strftime only knows microseconds
        micro = ts.strftime("%f")
        text = text.replace(micro, micro[:3], 1)
    return text


@dataclass
class _Line:
    """A sample line split around its timestamp text and its session keys."""

    pieces: list[str]  # text between the slots
    slots: list[tuple[str, int]]  # ("ts", -1) or ("key", key index)
    ts: datetime | None


class Replayer:
    """Replays sample lines with fresh session ids and shifted timestamps."""

    def __init__(self, spec: SourceSpec, sample: list[str], seed: int = 0) -> None:
        if spec.timestamp is None or not spec.timestamp.fields or not spec.timestamp.format:
            raise UsageError(
                f"synth needs a source whose timestamp is fields+format; {spec.name} is not"
            )
        if not sample:
            raise UsageError("synth: the sample has no lines")
        self.spec = spec
        self.rng = random.Random(seed)
        self.ts_fmt = _py_format(spec.timestamp.format)
        key_res = [re.compile(k.regex) for k in spec.session_keys]
        self.keys: list[str] = []
        key_index: dict[str, int] = {}
        self.lines: list[_Line] = []
        # The timestamp is the first text that parses with the format at the line's start
        # (the bundled fields+format sources all lead with their timestamp).
        width = len(_strftime(datetime(2000, 1, 1), self.ts_fmt))
        for text in sample:
            ts = None
            try:
                ts = datetime.strptime(text[:width], self.ts_fmt.replace("%f3", "%f"))
            except ValueError:
                ts = None
            pieces, slots, pos = [], [], 0
            if ts is not None:
                pieces.append("")
                slots.append(("ts", -1))
                pos = width
            spans = sorted(m.span() for r in key_res for m in r.finditer(text, pos))
            for start, end in spans:
                key = text[start:end]
                idx = key_index.setdefault(key, len(self.keys))
                if idx == len(self.keys):
                    self.keys.append(key)
                pieces.append(text[pos:start])
                slots.append(("key", idx))
                pos = end
            pieces.append(text[pos:])
            self.lines.append(_Line(pieces, slots, ts))
        stamps = [ln.ts for ln in self.lines if ln.ts is not None]
        self.t0 = min(stamps) if stamps else None
        span = (max(stamps) - min(stamps)) if stamps else timedelta(0)
        self.span = span + timedelta(seconds=1)
        self.key_names = [self._key_shape(k) for k in self.keys]

    @staticmethod
    def _key_shape(key: str) -> tuple[str, int, bool]:
        match = re.search(r"-?\d+$", key)
        prefix = key[: match.start()] if match else key
        digits = match.group(0) if match else ""
        return prefix, len(digits.lstrip("-")), digits.startswith("-")

    def _fresh(self, idx: int) -> str:
        prefix, n, neg = self.key_names[idx]
        if n == 0:
            return f"{prefix}{self.rng.getrandbits(48):x}"
        value = str(self.rng.randrange(10 ** (n - 1), 10**n))
        return f"{prefix}{'-' if neg and self.rng.random() < 0.5 else ''}{value}"

    def replay(self, n_lines: int) -> Iterator[tuple[str, int, dict[str, str]]]:
        """Yield ``(line, replay number, fresh->original key map)`` for ``n_lines`` lines."""
        produced, cycle = 0, 0
        while produced < n_lines:
            fresh = [self._fresh(i) for i in range(len(self.keys))]
            mapping = {fresh[i]: self.keys[i] for i in range(len(self.keys))}
            shift = self.span * cycle
            for ln in self.lines:
                if produced >= n_lines:
                    return
                out = [ln.pieces[0]]
                for (kind, idx), piece in zip(ln.slots, ln.pieces[1:], strict=True):
                    if kind == "ts" and ln.ts is not None:
                        out.append(_strftime(ln.ts + shift, self.ts_fmt))
                    else:
                        out.append(fresh[idx])
                    out.append(piece)
                yield "".join(out), cycle, mapping
                produced += 1
            cycle += 1


def _open_binary(path: Path) -> IO[bytes]:
    """A binary writer for ``path``; gzip-compressed when it ends in .gz."""
    if path.suffix == ".gz":
        return gzip.open(path, "wb", compresslevel=1)  # type: ignore[return-value]
    return open(path, "wb")


def read_sample(path: Path) -> list[str]:
    """Lines of a plain or ``.gz`` sample file (line ends removed)."""
    if not path.is_file():
        raise UsageError(f"sample not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:  # type: ignore[operator]
        data = fh.read()
    return data.decode("utf-8", errors="replace").splitlines()


def read_labels(path: Path) -> dict[str, str]:
    """``BlockId,Label`` (or any ``key,label`` pair) rows of a label file."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header or len(header) < 2:
            raise UsageError(f"{path}: expected a header like BlockId,Label")
        return {row[0]: row[1] for row in reader if len(row) >= 2}


def synth(
    spec: SourceSpec,
    sample_path: Path,
    n_lines: int,
    out: Path,
    files: int = 1,
    seed: int = 0,
    labels_path: Path | None = None,
) -> dict[str, object]:
    """Write ``n_lines`` replayed lines into ``out`` (a file, or a folder of ``files`` parts).

    With a label file, writes ``<out>.anomaly_label.csv`` (or ``out/anomaly_label.csv``) for
    the fresh ids.  Returns a summary.
    """
    if n_lines <= 0 or files <= 0:
        raise UsageError("synth: --lines and --files must be positive")
    sample = read_sample(sample_path)
    labels = read_labels(labels_path) if labels_path else None
    replayer = Replayer(spec, sample, seed)
    if files == 1 and out.suffix in (".log", ".gz"):
        targets = [out]
        label_out = out.with_name(out.name + ".anomaly_label.csv")
    else:
        out.mkdir(parents=True, exist_ok=True)
        targets = [out / f"part-{i:04d}.log" for i in range(files)]
        label_out = out / "anomaly_label.csv"
    per_file = [n_lines // files + (1 if i < n_lines % files else 0) for i in range(files)]
    stream = replayer.replay(n_lines)
    label_rows: list[tuple[str, str]] = []
    last_cycle = -1
    anomalous = 0
    for target, count in zip(targets, per_file, strict=True):
        target.parent.mkdir(parents=True, exist_ok=True)
        with (
            _open_binary(target) as fh,
            io.TextIOWrapper(fh, encoding="utf-8", newline="\n") as text,
        ):
            buf: list[str] = []
            for _ in range(count):
                line, cycle, mapping = next(stream)
                buf.append(line)
                if labels is not None and cycle != last_cycle:
                    last_cycle = cycle
                    for fresh, orig in mapping.items():
                        if orig in labels:
                            label_rows.append((fresh, labels[orig]))
                            anomalous += labels[orig] == "Anomaly"
                if len(buf) >= 65536:
                    text.write("\n".join(buf) + "\n")
                    buf.clear()
            if buf:
                text.write("\n".join(buf) + "\n")
    if labels is not None:
        with open(label_out, "w", newline="", encoding="utf-8") as out_fh:
            writer = csv.writer(out_fh)
            writer.writerow(["BlockId", "Label"])
            writer.writerows(label_rows)
    return {
        "lines": n_lines,
        "files": [str(t) for t in targets],
        "sample_lines": len(sample),
        "replays": -(-n_lines // len(sample)),
        "labels": str(label_out) if labels is not None else None,
        "anomalous_sessions": anomalous if labels is not None else None,
        "seed": seed,
    }
