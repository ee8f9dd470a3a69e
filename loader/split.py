"""Plan record-aligned byte ranges of one object, so that N shards together read every row once.

``plan_split`` reads the header record once and cuts the data after it into at most ``n`` byte
ranges ``[start, end)``: the first starts right after the header (``data_start``), each ends where
the next starts, the last ends at the object's size. Each range, read by the loader's decoder on
its own (``CsvDecoder(spec, offset=r.start, header=plan.header_names)``, or after the header
bytes), yields exactly the records, raw text, reject reasons and absolute offsets that the
whole-object parse yields for those bytes.

What a record is, is decided by ``loader.csvdecode`` and nothing else. The decoder splits the
bytes into lines at ``\\n`` (every accepted encoding is ASCII-compatible: the byte ``\\n`` is always
a newline), decodes each line, and lets ``csv.reader(strict=True)`` decide where records end: a
record is whole lines, and at the start of a line the parse is in one of two states, ``R`` (a
record starts here) or ``Q`` (inside a quoted field of a record begun earlier). A malformed record
(``"ok"tail``, a bare CR outside quotes) ends at the end of the line where csv refused it; a record
longer than ``max_record_bytes`` (an unbalanced quote) becomes an error record of its first line
and parsing restarts on the next line; a quote still open at the end of data makes one error
record to the end.

A cut ``b`` is valid when it is a record boundary of the whole-object parse and no record of that
parse starting in ``[b - max_record_bytes, b)`` was cut for length while its quoted field was still
open at ``b``: the whole-object parse knew it was too long from bytes after ``b``, which a shard
that ends at ``b`` never reads (it would report an unterminated quoted field at its end, which
the pipeline refuses). Only a record longer than ``max_record_bytes`` can be such (an unbalanced
quote, or a quoted field of more than that).

Method, per cut. ``c`` is the candidate offset ``data_start + (size - data_start) * i / n`` and
``p`` the first line start at or after it. The planner decodes forward from ``p`` under both
hypotheses with the loader's own ``CsvDecoder``: ``R`` from ``p`` as it is, ``Q`` with one quote
character put in front of ``p`` (csv is then inside a quoted field at ``p``, exactly as it would
be). A csv error does not kill a hypothesis, it ends a record as it does in the loader; the decoder
cuts ``Q``'s first record only if a quoted field open at ``p`` would make a record too long, and
then ``Q`` is impossible. Each run yields the records its hypothesis implies; one of the runs is
the whole-object parse from ``p`` on. So:

* once ``Q``'s first record has ended as csv ends a record, a record end both runs share (and
  valid in both) is a valid cut. A record begun before ``p`` and still open at ``p`` is in the
  state ``Q`` started from, so it ended where ``Q``'s first record ended, before the cut;
* while ``Q``'s first record is open (text with no quote is one long quoted field to ``Q``),
  ``Q`` holds only if a quote character opened that field on a line starting at most
  ``max_record_bytes`` before the field's end and after the previous cut; a long record open at
  ``R``'s first valid record end ``b`` would need one too. The planner reads the lines from
  ``max(previous cut, b - max_record_bytes)`` to ``p`` backwards, decoded as the decoder decodes
  them, and stops at the nearest quote character: none there, ``R`` holds and ``b`` is the cut;
* the runs read the object forward in growing steps (``first_read``, doubled, up to ``window``
  bytes past ``c``). When neither rule has found a cut by then (a quoted field of CSV-looking
  lines longer than the window, or rows of nothing but doubled quotes, which read the same inside
  and outside quotes), the planner scans exactly: the loader's decoder from the previous cut to
  the first valid record end at or after ``c``. Correct by construction; counted in
  ``SplitPlan.exact_scans``.

Cost (``SplitPlan.bytes_read`` and ``reads``): the header record, plus per cut typically one
``first_read`` (64 KiB, one ranged GET) wherever quote characters occur every few records: the
first quote after ``p`` closes ``Q``'s field (strict csv then refuses the text after it, or reads
on to the end of the line), so ``Q``'s first record ends there and the runs meet soon after.
Text with no quote character costs, per cut, the backward read up to ``max_record_bytes`` (4 MiB)
or to the previous cut: nothing shorter proves that no quoted field spans the cut. An object of
quote-free text split into shards smaller than 4 MiB is therefore read about once (CPU stays the
decoder's, ~1 us a record, plus a decode of the lines read backwards). The exact scan reads from
the previous cut to the cut.

Where bytes are not cut (``note`` says why): a compressed object (``compression_of``) is one range,
the whole stored object, to be loaded without a byte range; a quote character that the encoding
cannot write, or U+FFFD (which the decoder also makes of undecodable bytes), gives one range.
Delimiters and quotes are found by csv in decoded text, never as bytes, so multi-byte encodings
(shift_jis, gbk, big5, gb18030, ...) whose trail bytes may equal an ASCII delimiter or quote byte
are cut like any other: the only byte the planner looks for is ``\\n``.

Decided where a caller may wonder: an object that is empty, or only blank lines, or a header row
and nothing after it, gets no range (``ranges == ()``, with a ``note``; ``data_start`` is 0 when
there is no header row, else the header's end). A whole-object load of the first two fails with
"no header row" when ``header=True``, and of the third checks the header against the schema: a
caller that wants those outcomes runs such an object unsharded. Otherwise the ranges tile
``[data_start, size)`` and none is empty, but a range may hold only blank lines when the object
has runs of them. ``header`` is always the object's bytes before ``data_start``. Fewer than ``n``
ranges come back when the object has no valid cut left after a candidate (``note`` says so).
``max_record_bytes`` must be the one the shards' decoders use (the decoder's default, 4 MiB, which
the pipeline uses).
"""

from __future__ import annotations

import codecs
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from loader.config import CsvSpec
from loader.csvdecode import CsvDecoder
from loader.errors import ConfigError, SourceError
from loader.models import RecordChunk
from loader.source import Source, SourceInfo, compression_of

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "DEFAULT_WINDOW",
    "ByteRange",
    "RangeReader",
    "SplitPlan",
    "local_range_reader",
    "plan_split",
    "s3_range_reader",
]

#: ``read_range(start, end) -> bytes``: bytes ``[start, end)`` of one pinned object.
RangeReader = Callable[[int, int], bytes]

#: The decoder's record limit (``CsvDecoder``'s default; a test pins the two together).
DEFAULT_MAX_RECORD_BYTES = 4 * 1024 * 1024
#: How far past a candidate offset the two hypotheses are decoded before the planner falls back.
DEFAULT_WINDOW = 1 << 20
_FIRST_READ = 64 * 1024
_SCAN_CHUNK = 1 << 20
#: Column names for decoders that only find record ends (never read as a header).
_ANY_HEADER = ("_",)


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``[start, end)`` of the object (``LoadSpec.byte_range = (start, end)``)."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"a byte range needs 0 <= start < end, got [{self.start}, {self.end})")

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, kw_only=True)
class SplitPlan:
    """The planner's answer (see the module docstring for what holds of ``ranges``).

    ``header``: the object's bytes before ``data_start`` (a BOM, blank lines, the header record;
    empty without a header row); ``header_names``: the header row as the decoder reads it (what a
    shard's ``LoadSpec.header_names`` takes), None without a header row. ``note``: why the plan has
    fewer than the ranges asked for, or None. ``exact_scans``: cuts found by the sequential scan
    instead of speculation; ``bytes_read`` / ``reads``: what the planner read.
    """

    header: bytes
    data_start: int
    ranges: tuple[ByteRange, ...]
    note: str | None = None
    header_names: tuple[str, ...] | None = None
    size: int = 0
    exact_scans: int = 0
    bytes_read: int = 0
    reads: int = 0


def plan_split(
    read_range: RangeReader,
    *,
    size: int,
    spec: CsvSpec,
    n: int,
    name: str,
    window: int = DEFAULT_WINDOW,
    first_read: int = _FIRST_READ,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    start: int | None = None,
    end: int | None = None,
) -> SplitPlan:
    """Plan at most ``n`` record-aligned ranges of one object of ``size`` bytes.

    ``read_range`` reads the object (``local_range_reader``, ``s3_range_reader``); ``name`` is its
    key or path (the extension tells a compressed object, as for a load); ``window`` bounds the
    bytes decoded forward per cut before falling back; ``first_read`` is the first read per cut.
    ``start`` / ``end`` cut only the stretch ``[start, end)`` of the data (two record boundaries
    of the whole-object parse: a shard's range, a resumed load's low-water mark; default the data
    after the header row, to the object's end; a ``start`` before the data, as 0, means the data's
    start): the ranges then tile that stretch. The header row is still read from the object's
    start (``header_names``).
    Raises SourceError when the object cannot be read or its header row is not valid CSV.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"the number of shards must be a positive integer, got {n!r}")
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    if first_read < 1 or window < first_read:
        raise ConfigError(f"the split window needs 1 <= first_read <= window, got {first_read}, {window}")
    if max_record_bytes < 1:
        raise ConfigError(f"max_record_bytes must be >= 1, got {max_record_bytes}")
    compression = compression_of(name, spec)
    if compression != "none":
        return SplitPlan(
            header=b"",
            data_start=0,
            ranges=(ByteRange(0, size),) if size else (),
            note=f"{compression} object: read as one shard (load it without a byte range)",
            size=size,
        )
    planner = _Planner(
        read_range,
        size=size,
        spec=spec,
        name=name,
        window=window,
        first_read=first_read,
        max_record_bytes=max_record_bytes,
    )
    return planner.plan(n, start=start, end=end)


def local_range_reader(path: str) -> RangeReader:
    """``read_range`` for a local file (opened per read, so nothing stays open):
    ``loader.source.Source.read_range``."""
    return Source(_info(path=path, uri=path), s3_client=None).read_range


def s3_range_reader(
    client: Any, *, bucket: str, key: str, version_id: str | None = None, etag: str | None = None
) -> RangeReader:
    """``read_range`` for an S3 object: ``loader.source.Source.read_range``, one ranged GetObject per
    read, pinned to ``version_id`` (or, on an unversioned bucket, ``If-Match: etag``), so every read
    is of the same bytes."""
    if version_id is None and etag is None:
        raise ConfigError(f"s3://{bucket}/{key}: pin the object to plan a split: give version_id or etag")
    info = _info(uri=f"s3://{bucket}/{key}", bucket=bucket, key=key, version_id=version_id, etag=etag)
    return Source(info, s3_client=client).read_range


def _info(*, uri: str, path: str | None = None, **pin: str | None) -> SourceInfo:
    """The object to read ranges of (its size is not needed: every read names its end)."""
    return SourceInfo(
        uri=uri,
        bucket=pin.get("bucket"),
        key=pin.get("key"),
        path=path,
        version_id=pin.get("version_id"),
        etag=pin.get("etag"),
        size=None,
        compression="none",
    )


class _Planner:
    def __init__(
        self,
        read_range: RangeReader,
        *,
        size: int,
        spec: CsvSpec,
        name: str,
        window: int,
        first_read: int,
        max_record_bytes: int,
    ) -> None:
        self._read_range = read_range
        self.size = size
        self.spec = spec
        self.name = name
        self.window = window
        self.first_read = first_read
        self.max = max_record_bytes
        codec = codecs.lookup(spec.encoding).name
        # as the decoder reads it: a BOM is its business, at byte 0 only
        self.encoding = "utf-8" if codec == "utf-8-sig" else codec
        self.quote: bytes | None
        try:
            self.quote = spec.quotechar.encode(self.encoding)
        except UnicodeError:
            self.quote = None
        self.bytes_read = 0
        self.reads = 0
        self.exact_scans = 0

    # -- the plan -----------------------------------------------------------------------------

    def plan(self, n: int, *, start: int | None = None, end: int | None = None) -> SplitPlan:
        size = self.size
        found = self._header()
        if found is None:
            what = "empty" if size == 0 else "only blank lines"
            return self._result(b"", 0, (), None, f"no header row: the object is {what}; nothing to split")
        data_start, names, header = found
        if data_start >= size:
            what = "the object is empty" if size == 0 else "no data after the header row"
            return self._result(header, data_start, (), names, f"{what}; nothing to split")
        lo = data_start if start is None else max(start, data_start)
        hi = size if end is None else end
        if not data_start <= lo < hi <= size:
            raise ValueError(f"the stretch [{lo}, {hi}) is not inside the data [{data_start}, {size})")
        if self.quote is None or self.spec.quotechar == "\ufffd":
            why = (
                f"the quote character {self.spec.quotechar!r} cannot be told apart in {self.encoding} "
                "text: read as one shard"
            )
            return self._result(header, data_start, (ByteRange(lo, hi),), names, why)
        cuts = [lo]
        for i in range(1, n):
            c = max(lo + (hi - lo) * i // n, cuts[-1] + 1)
            if c >= hi:
                break
            cut = self._cut_at_or_after(c, cuts[-1])
            if cut is None or cut >= hi:
                break
            cuts.append(cut)
        cuts.append(hi)
        ranges = tuple(ByteRange(a, b) for a, b in pairwise(cuts))
        note = None
        if len(ranges) < n:
            note = f"{len(ranges)} of {n} ranges: the object has no record boundary left to cut at"
        return self._result(header, data_start, ranges, names, note)

    def _result(
        self,
        header: bytes,
        data_start: int,
        ranges: tuple[ByteRange, ...],
        names: tuple[str, ...] | None,
        note: str | None,
    ) -> SplitPlan:
        return SplitPlan(
            header=header,
            data_start=data_start,
            ranges=ranges,
            note=note,
            header_names=names,
            size=self.size,
            exact_scans=self.exact_scans,
            bytes_read=self.bytes_read,
            reads=self.reads,
        )

    def _read(self, start: int, end: int) -> bytes:
        end = min(end, self.size)
        if start >= end:
            return b""
        data = self._read_range(start, end)
        self.reads += 1
        self.bytes_read += len(data)
        if len(data) != end - start:
            # a shorter object than planned for: cutting it would misplace every later range
            raise SourceError(
                f"{self.name}: reading bytes {start}-{end} returned {len(data)} bytes; the object is "
                f"not the {self.size} bytes planned for (changed or truncated)"
            )
        return data

    def _header(self) -> tuple[int, tuple[str, ...] | None, bytes] | None:
        """(data_start, header names, header bytes), or None when there is no header record."""
        if not self.spec.header:
            return 0, None, b""
        dec = CsvDecoder(self.spec, max_record_bytes=self.max)
        got = bytearray()
        step = self.first_read
        while dec.header_end is None:
            chunk = self._read(len(got), len(got) + step)
            got += chunk
            step = min(2 * step, _SCAN_CHUNK)
            try:  # a header row the decoder refuses: the words a load would say, naming the object
                if chunk:
                    dec.feed(chunk)
                else:
                    dec.finish()
                    break
            except SourceError as exc:
                raise SourceError(f"{self.name}: {exc}") from exc
        if dec.header_end is None or dec.header is None:
            return None
        end = dec.header_end
        return end, tuple(dec.header), bytes(got[:end])

    # -- one cut ------------------------------------------------------------------------------

    def _cut_at_or_after(self, c: int, prev: int) -> int | None:
        """A valid cut in ``[c, size)`` (see the module docstring), or None if there is none.
        ``prev`` (< c) is the previous cut."""
        assert self.quote is not None
        size = self.size
        lo = c - 1  # from the byte before c: a line that starts at c is seen
        limit = min(size, lo + self.window)
        cache = _Cached(lo, bytearray())
        pos = lo
        step = self.first_read
        r_run: _Run | None = None
        q_run: _Run | None = None
        looked_back = False
        while pos < limit:
            chunk = self._read(pos, min(pos + step, limit))
            pos += len(chunk)
            step *= 2
            if r_run is None or q_run is None:
                cache.data += chunk
                nl = cache.data.find(b"\n")
                if nl < 0:
                    continue
                p = lo + nl + 1
                if p >= size:
                    return None  # the last line starts before c: no record starts after it
                r_run = _Run(self, start=p, prefix=b"")
                q_run = _Run(self, start=p, prefix=self.quote)
                chunk = bytes(cache.data[nl + 1 :])
            else:
                cache.append(chunk)
            r_run.feed(chunk)
            q_run.feed(chunk)
            if pos >= size:
                r_run.finish()
                q_run.finish()
            first = q_run.first_state(cache)
            if first == "closed":
                # whatever holds at p, from here on it is one of the two runs: a cut both make is
                # a record boundary; and a record begun before p that is open at p ended where Q's
                # first record ends, so none is open at a cut after it
                for end in sorted(r_run.ends.keys() & q_run.ends.keys()):
                    if end >= size:
                        break
                    if r_run.clean_before(end, cache) and q_run.clean_before(end, cache):
                        return end
                continue
            if first == "cut":
                # a quoted field open at p would make a record too long: R holds. A record begun
                # before p cannot be open at a cut max_record_bytes or more past p
                for end in sorted(r_run.ends):
                    if end >= size:
                        break
                    if end >= r_run.start + self.max and r_run.clean_before(end, cache):
                        return end
            if not looked_back:
                # Q's first record is still open (or too long). Q holds only if a quote opened its
                # field on a line that starts after pos - max_record_bytes (and after prev); a
                # record begun before p and open at R's first cut would need a quote there too.
                # No quote on the lines from max(prev, cut - max_record_bytes) to p: R holds.
                cut = r_run.first_clean_end(cache)
                if cut is not None:
                    looked_back = True
                    if self._no_quote_in_lines(max(prev, cut - self.max), r_run.start, cache):
                        return cut
        return self._exact_scan(c, prev, cache)

    def _no_quote_in_lines(self, lo: int, p: int, cache: _Cached) -> bool:
        """Whether the lines that start in ``[lo, p)`` (``p`` a line start) hold no quote character
        as the decoder sees them (each line decoded on its own, undecodable bytes replaced).

        Read backwards from ``p`` in growing steps, so it stops at the nearest quote."""
        quote = self.spec.quotechar
        floor = max(lo - 1, 0)  # from the byte before lo: a line that starts at lo is seen
        checked = p  # a line start: the lines from here to p hold no quote
        step = self.first_read
        while checked > lo:
            start = max(floor, checked - step)
            step *= 2
            cache.extend_back(self, start)
            region = cache.take(self, start, checked)
            # the line that starts at byte 0 follows no newline
            nl = -1 if start == 0 and lo == 0 else region.find(b"\n")
            if start > floor and nl == len(region) - 1:
                continue  # no whole line in this step: read further back
            lines = region[nl + 1 :].split(b"\n")
            lines.pop()  # `checked` is a line start: the last item is empty
            for line in lines:
                try:
                    text = line.decode(self.encoding)
                except UnicodeDecodeError:
                    text = line.decode(self.encoding, "replace")
                if quote in text:
                    return False
            if start == floor:
                break
            checked = start + nl + 1
        return True

    def _exact_scan(self, c: int, prev: int, cache: _Cached) -> int | None:
        """The loader's decoder from the cut ``prev``: the first record end >= ``c`` that is a valid
        cut."""
        self.exact_scans += 1
        size = self.size
        dec = CsvDecoder(self.spec, offset=prev, header=_ANY_HEADER, max_record_bytes=self.max)
        pos = prev
        last = b""
        long_open: int | None = None  # the start of the last record that makes a cut invalid
        final = False
        step = self.first_read  # past the cached bytes, where the cut is likely near
        while not final:
            if pos < size:
                c0, c1 = cache.start, cache.start + len(cache.data)
                if pos < c0:
                    end = min(pos + _SCAN_CHUNK, c0)
                elif pos < c1:
                    end = c1
                else:
                    end, step = pos + step, min(2 * step, _SCAN_CHUNK)
                chunk = cache.take(self, pos, end)
                recent = _Cached(pos - len(last), bytearray(last + chunk))
                last = chunk
                pos += len(chunk)
                out = dec.feed(chunk)
            else:
                recent = _Cached(pos - len(last), bytearray(last))
                out = dec.finish()
                final = True
            for i, (start, end) in enumerate(zip(out.starts, out.ends, strict=True)):
                if end >= size:
                    return None
                if out.rows[i] is None and not self._clean(start, end, recent):
                    long_open = start
                if end >= c and (long_open is None or long_open < end - self.max):
                    return end
        return None

    def _clean(self, start: int, end: int, source: _Cached, prefix: bytes = b"") -> bool:
        """Whether a decoder given only the bytes of one record of the whole-object parse (``prefix``
        + object bytes ``[start, end)``) reads them as one record before it is told the data ends.

        False for one kind of record only: one longer than ``max_record_bytes`` that the decoder
        cut to its first line while a quoted field was still open there. The whole-object parse
        knew it was too long from bytes that come later; a shard that ends less than
        ``max_record_bytes`` after its start cannot see them and reads an unterminated quoted
        field at its end instead (and the pipeline refuses a shard whose last record does not end
        at its end). Only error records can be such a cut."""
        if end - start + len(prefix) > self.max:
            return True  # a shard that reads it whole sees that it is too long as well
        record = prefix + source.take(self, start, end)
        dec = CsvDecoder(self.spec, offset=start + 1, header=_ANY_HEADER, max_record_bytes=self.max)
        return start + 1 + len(record) in dec.feed(record).ends


class _Run:
    """The decoder run under one hypothesis at the line start ``start``: ``R`` (no prefix: a record
    starts there) or ``Q`` (a quote character in front: a quoted field is open there).

    Offsets here are the object's; the decoder's are ``len(prefix)`` more (the prefix sits at
    ``[start, start + len(prefix))``), and ``start`` >= 1, so the decoder never looks for a BOM.
    """

    def __init__(self, planner: _Planner, *, start: int, prefix: bytes) -> None:
        self.start = start
        self._planner = planner
        self._prefix = prefix
        self._fed = False
        self._dec = CsvDecoder(planner.spec, offset=start, header=_ANY_HEADER, max_record_bytes=planner.max)
        #: record end -> record start; Q's first record starts before `start` (at start - len(prefix))
        self.ends: dict[int, int] = {}
        #: starts and ends of the error records (Q's first apart): the only ones that can be long
        #: and open; in file order
        self._error_starts: list[int] = []
        self._error_ends: list[int] = []
        self._first: tuple[int, bool] | None = None  # Q: (end, whether an error) of its first record
        self._first_closed: bool | None = None
        self._clean: dict[int, bool] = {}  # error record start -> _Planner._clean

    def feed(self, data: bytes) -> None:
        if not self._fed:
            data, self._fed = self._prefix + data, True
        self._take(self._dec.feed(data))

    def finish(self) -> None:
        self._take(self._dec.finish())

    def _take(self, out: RecordChunk) -> None:
        shift = len(self._prefix)
        for i, (start, end) in enumerate(zip(out.starts, out.ends, strict=True)):
            error = out.rows[i] is None
            if self._first is None and self._prefix:
                self._first = (end - shift, error)
            elif error:
                self._error_starts.append(start - shift)
                self._error_ends.append(end - shift)
            self.ends[end - shift] = start - shift

    def first_state(self, cache: _Cached) -> str:
        """Q only: ``open`` while its first record has not ended, ``closed`` once it ended as csv
        ends a record, ``cut`` when the decoder cut it for length (a quoted field open at
        ``start`` would make a record too long, so Q is impossible)."""
        if self._first is None:
            return "open"
        if self._first_closed is None:
            end, error = self._first
            self._first_closed = not error or self._planner._clean(self.start, end, cache, self._prefix)
        return "closed" if self._first_closed else "cut"

    def clean_before(self, cut: int, cache: _Cached) -> bool:
        """Whether no record of this run that starts in ``[cut - max_record_bytes, cut)`` is long
        and still open at ``cut`` (see ``_Planner._clean``)."""
        starts = self._error_starts
        for i in range(bisect_left(starts, cut - self._planner.max), bisect_left(starts, cut)):
            start = starts[i]
            clean = self._clean.get(start)
            if clean is None:
                clean = self._clean[start] = self._planner._clean(start, self._error_ends[i], cache)
            if not clean:
                return False
        return True

    def first_clean_end(self, cache: _Cached) -> int | None:
        """R only: the first record end before the object's end that is a valid cut."""
        for end in sorted(self.ends):
            if end >= self._planner.size:
                return None
            if self.clean_before(end, cache):
                return end
        return None


class _Cached:
    """Bytes already read for one cut, ``[start, start + len(data))``, not read twice."""

    def __init__(self, start: int, data: bytearray) -> None:
        self.start = start
        self.data = data

    def append(self, data: bytes) -> None:
        self.data += data

    def extend_back(self, planner: _Planner, start: int) -> None:
        """Read ``[start, self.start)`` into the cache."""
        if start < self.start:
            self.data[:0] = planner._read(start, self.start)
            self.start = start

    def take(self, planner: _Planner, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the object (clamped to its size), read where not cached."""
        end = min(end, planner.size)
        c0, c1 = self.start, self.start + len(self.data)
        if end <= c0 or start >= c1:
            return planner._read(start, end)
        parts = [planner._read(start, c0)] if start < c0 else []
        parts.append(bytes(self.data[max(start, c0) - c0 : min(end, c1) - c0]))
        if end > c1:
            parts.append(planner._read(c1, end))
        return b"".join(parts)
