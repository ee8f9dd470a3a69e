"""CSV records with exact byte offsets: the decoder's hot path.

Bytes arrive in chunks that may end anywhere (mid-record, mid-CRLF, mid-UTF-8 character, inside a
quoted field). The decoder keeps the unfinished tail, splits the rest on the byte ``\\n`` (the
encoding is ASCII-compatible, so a ``\\n`` byte is always a newline) and hands whole lines to
``csv.reader``, which decides where a record ends exactly as it would for the whole text.

Two tiers, both in C for the bulk of the work:

* fast: decode the chunk once, split on ``\\n`` (after ``\\r\\n`` -> ``\\n``) and parse every line in
  one ``list(csv.reader(lines))`` (or, when the text has no quote, bare CR or NUL, one
  ``str.split`` per line, which is all csv would do there). If every line produced exactly one
  row, no record spans two lines and the offsets are the cumulative byte lengths of the lines.
  An empty sentinel line at the end tells whether the last line closed its record (a quoted
  field left open swallows the sentinel).
* general: for chunks with quoted newlines, CSV errors or undecodable bytes, parse lines that keep
  their ``\\n`` one row at a time and map each row to its lines with ``reader.line_num``.

csv runs with ``strict=True`` in every tier that calls it: a quoted field followed by more text
(``"ok"tail``) is an error record (csv's default reading glues it into ``oktail``). Quote-free text
never reaches csv, so the check costs the plain fast path nothing.

Memory stays bounded: a record that grows beyond ``max_record_bytes`` (an unbalanced quote, or a
line that never ends) becomes an error record and parsing restarts at the next line boundary.

``csv.field_size_limit`` is process-wide; the decoder raises it to ``max_record_bytes`` (never lowers
it) so one large field (a JSON blob under the 400 KB item limit) is not an error.

Run ``python -m loader.csvdecode --bench`` for the micro-benchmark (µs per record).
"""

from __future__ import annotations

import codecs
import csv
import operator
from collections import deque
from collections.abc import Sequence
from itertools import accumulate, compress, islice, repeat

from loader.config import CsvSpec
from loader.errors import SourceError
from loader.models import RecordChunk

__all__ = ["CsvDecoder"]

_BOM = b"\xef\xbb\xbf"
#: An oversized record's raw text is cut to this many bytes (the reason says why).
_OVERSIZE_RAW_BYTES = 64 * 1024


class CsvDecoder:
    """Turns a stream of byte chunks into :class:`RecordChunk` s with exact byte offsets.

    ``offset`` is the absolute byte offset (in the decompressed object) of the first byte fed;
    ``first_row`` the number of the first data row. With ``spec.header`` and no ``header`` given,
    the first record is the header (``header`` / ``header_end`` are set once it is decoded); a
    resumed decoder gets the header from the checkpoint instead.
    """

    def __init__(
        self,
        spec: CsvSpec,
        *,
        offset: int = 0,
        first_row: int = 1,
        header: Sequence[str] | None = None,
        max_record_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        if offset < 0 or first_row < 1 or max_record_bytes < 1:
            raise ValueError("offset >= 0, first_row >= 1 and max_record_bytes >= 1 are required")
        self.header: list[str] | None
        self.header_end: int | None = None
        self._need_header = False
        if header is not None:
            self.header = list(header)
        elif spec.header:
            self.header = None
            self._need_header = True
        else:
            assert spec.columns is not None  # CsvSpec checks it
            self.header = list(spec.columns)
        name = codecs.lookup(spec.encoding).name
        # the BOM is handled here, so a "-sig" codec must not strip one at every chunk start
        self._encoding = "utf-8" if name == "utf-8-sig" else name
        self._label = spec.encoding
        self._delimiter = spec.delimiter
        self._quotechar = spec.quotechar
        self._max = max_record_bytes
        self._pending = b""
        self._base = offset  # absolute offset of self._pending[0]
        self._bom = offset == 0
        self._next_row = first_row
        self._skip_start: int | None = None  # start of an overlong line being skipped
        self._skip_prefix = b""
        self._finished = False
        self._eof_at = -2  # end of data once finish() added a virtual final newline
        if csv.field_size_limit() < max_record_bytes:
            csv.field_size_limit(max_record_bytes)

    # -- public -------------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> RecordChunk:
        """Decode ``chunk``; return the records it completed (possibly none)."""
        if self._finished:
            raise RuntimeError("CsvDecoder.feed() after finish()")
        out = RecordChunk(first_number=self._next_row)
        if self._skip_start is not None:
            chunk = self._skip_line(chunk, out)
            if self._skip_start is not None:
                return out
        data = self._pending + chunk if self._pending else chunk
        if self._bom:
            if len(data) < len(_BOM) and _BOM.startswith(data):
                self._pending = data
                return out
            self._bom = False
            if data.startswith(_BOM):
                data = data[len(_BOM) :]
                self._base += len(_BOM)
        self._consume(data, out, final=False)
        self._next_row += len(out.rows)
        return out

    def finish(self) -> RecordChunk:
        """At end of data: the last record if it had no line terminator, or an error record."""
        if self._finished:
            raise RuntimeError("CsvDecoder.finish() called twice")
        self._finished = True
        out = RecordChunk(first_number=self._next_row)
        if self._skip_start is not None:
            self._emit_oversize(out, self._skip_start, self._base, self._skip_prefix)
            self._skip_start = None
        data, self._pending = self._pending, b""
        self._bom = False
        if data:
            self._consume(data, out, final=True)
        self._next_row += len(out.rows)
        return out

    # -- internals ----------------------------------------------------------------------------

    def _skip_line(self, chunk: bytes, out: RecordChunk) -> bytes:
        """Discard the rest of an overlong line; at its end emit it as an error record."""
        assert self._skip_start is not None
        nl = chunk.find(b"\n")
        if nl < 0:
            self._base += len(chunk)
            return b""
        self._base += nl + 1
        self._emit_oversize(out, self._skip_start, self._base, self._skip_prefix)
        self._skip_start = None
        self._skip_prefix = b""
        return chunk[nl + 1 :]

    def _consume(self, data: bytes, out: RecordChunk, *, final: bool) -> None:
        """Emit every record complete in ``data``; keep the rest pending (or, if final, flush it).

        The length rule does not depend on where chunks end: a record longer than the limit
        (complete, or still open with more than the limit already read) turns its first line into
        an error record and parsing restarts on the next line.
        """
        base = self._base
        end_of_data = base + len(data)
        if final and not data.endswith(b"\n"):
            data += b"\n"  # a virtual terminator; the last record's end is clamped below
            self._eof_at = end_of_data
        exact = False
        while True:
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                break
            complete = data if cut == len(data) else data[:cut]
            used = self._parse_general(complete, base, out) if exact else self._parse(complete, base, out)
            if used:
                data = data[used:]
                base += used
            if used == cut:
                break
            too_long = end_of_data - base > self._max
            if not (too_long or final):
                break
            if not exact or used:
                exact = True  # the fast tiers can only guess an open quote: let csv decide
                continue
            if not too_long:
                break
            # csv agrees: an open quote ran past the limit. Its first line is the error record,
            # then parsing restarts on the line after it.
            nl = data.index(b"\n") + 1
            self._emit_oversize(out, base, min(base + nl, end_of_data), data[:nl])
            data = data[nl:]
            base += nl
            exact = False
        if final:
            if out.ends and out.ends[-1] > end_of_data:
                out.ends[-1] = end_of_data
            if self.header_end is not None and self.header_end > end_of_data:
                self.header_end = end_of_data
            if base < end_of_data:
                text = data[: end_of_data - base].decode(self._encoding, "replace")
                reason = "unterminated quoted field at end of data"
                self._emit(out, base, end_of_data, None, _strip_terminator(text), reason)
            self._base = end_of_data
            self._pending = b""
            return
        if len(data) > self._max and b"\n" not in data:
            # one line longer than the limit and still no newline: skip to its end
            self._skip_start = base
            self._skip_prefix = data[:_OVERSIZE_RAW_BYTES]
            self._base = base + len(data)
            self._pending = b""
            return
        self._base = base
        self._pending = data

    def _parse(self, complete: bytes, base: int, out: RecordChunk) -> int:
        """Parse whole lines (``complete`` ends with ``\\n``); return the bytes consumed.

        Fewer than ``len(complete)`` bytes are consumed when the last record is still open (a
        quoted field continues past the last newline): those bytes stay pending.
        """
        try:
            text = complete.decode(self._encoding)
        except UnicodeDecodeError:
            return self._parse_general(complete, base, out)
        lines: list[str] | None = None
        if len(text) == len(complete) and text.isascii():  # O(1): one byte per character, so
            # each line is as long in bytes as in characters (the bytes need not be split)
            lines = text.split("\n")
            lens = list(map(len, lines))
        else:
            lens = list(map(len, complete.split(b"\n")))
        lens.pop()  # the "" after the last "\n"
        if max(lens) >= self._max:  # a line longer than the limit (with its "\n")
            return self._parse_general(complete, base, out)
        bounds: list[int] = list(accumulate(map(operator.add, lens, repeat(1)), initial=base))
        used: int | None = None
        if self._quotechar in text:
            used = self._parse_joined(text, base, out, bounds)
        if used is None:
            used = self._parse_lines(text, out, bounds, lines)
        if used is None:
            used = self._parse_general(complete, base, out)
        return used

    def _parse_lines(
        self, text: str, out: RecordChunk, bounds: list[int], lines: list[str] | None = None
    ) -> int | None:
        """Every line one record: one ``csv.reader`` pass; None if csv disagrees.

        ``lines``: ``text.split("\n")`` when the caller has it already."""
        if "\r" in text:
            text = text.replace("\r\n", "\n")
            lines = None
        if lines is None:
            lines = text.split("\n")  # the last item is "", the sentinel
        rows: list[list[str]]
        if self._quotechar not in text and "\r" not in text and "\x00" not in text:
            # no quote, no bare CR, no NUL: csv.reader would cut each line at every delimiter and
            # nothing else; str.split does that ~2x faster (1.4 against 3.1 us a 250-byte row).
            # Without quotes no record is left open, so the sentinel goes first.
            lines.pop()
            rows = list(map(str.split, lines, repeat(self._delimiter)))
            if [""] in rows:  # csv reads an empty line as []
                rows = [[] if r == [""] else r for r in rows]
        else:
            try:
                rows = list(
                    csv.reader(lines, delimiter=self._delimiter, quotechar=self._quotechar, strict=True)
                )
            except csv.Error:  # a malformed record, or the last one is still open: the exact tier decides
                return None
            if len(rows) != len(lines):  # some record spans lines, or the last one is still open
                return None
            rows.pop()
            lines.pop()
        self._emit_bulk(out, rows, lines, bounds[:-1], bounds[1:])
        return bounds[-1] - bounds[0]

    def _parse_joined(self, text: str, base: int, out: RecordChunk, bounds: list[int]) -> int | None:
        """Lines with an odd number of quotes open or close a multi-line record: join them.

        Parity is only a guess (a quote inside an unquoted field is literal for csv); the guess is
        accepted only when csv gives exactly one row per joined record and agrees that a record
        left open at the end is open; otherwise None (the caller tries the other tiers).
        """
        lines = text.split("\n")
        lines.pop()
        quote = self._quotechar
        odd = list(
            compress(range(len(lines)), map(operator.and_, map(str.count, lines, repeat(quote)), repeat(1)))
        )
        if not odd:
            return None
        n = len(lines)
        stop = n
        if len(odd) % 2:  # a record opened on the last odd line stays pending, if csv agrees
            stop = odd.pop()
            tail = [line + "\n" for line in lines[stop:]]
            tail.append("")
            reader = csv.reader(tail, delimiter=self._delimiter, quotechar=quote, strict=True)
            try:
                deque(reader, maxlen=0)
            except csv.Error:
                # strict csv says "unexpected end of data" once it has read the sentinel with a
                # quoted field open; an error before the sentinel is a malformed record instead
                if reader.line_num < len(tail):
                    return None
            else:  # the sentinel was a row of its own: nothing is open
                return None
        recs: list[str] = []
        last: list[int] = []  # index of each record's last line
        pos = 0
        pairs = iter(odd)
        for first in pairs:
            end = next(pairs)
            if bounds[end + 1] - bounds[first] > self._max:
                return None
            if pos < first:
                recs += lines[pos:first]
                last += range(pos, first)
            recs.append("\n".join(lines[first : end + 1]))
            last.append(end)
            pos = end + 1
        recs += lines[pos:stop]
        last += range(pos, stop)
        recs.append("")  # sentinel: swallowed if csv thinks the last record is still open
        try:
            rows = list(csv.reader(recs, delimiter=self._delimiter, quotechar=quote, strict=True))
        except csv.Error:
            return None
        if len(rows) != len(recs):
            return None
        rows.pop()
        recs.pop()
        ends = list(map(bounds.__getitem__, map(operator.add, last, repeat(1))))
        starts = [base, *ends[:-1]] if ends else []
        raws = list(map(str.removesuffix, recs, repeat("\r"))) if "\r" in text else recs
        self._emit_bulk(out, rows, raws, starts, ends)
        return bounds[stop] - base

    def _emit_bulk(
        self, out: RecordChunk, rows: list[list[str]], raws: list[str], starts: list[int], ends: list[int]
    ) -> None:
        if [] in rows:  # blank lines are not records
            keep = list(map(bool, rows))
            rows = list(compress(rows, keep))
            raws = list(compress(raws, keep))
            starts = list(compress(starts, keep))
            ends = list(compress(ends, keep))
        if self._need_header and rows:
            self._take_header(rows[0], None, starts[0], ends[0])
            del rows[0], raws[0], starts[0], ends[0]
        out.starts += starts
        out.ends += ends
        out.rows += rows
        out.raws += raws

    def _parse_general(self, complete: bytes, base: int, out: RecordChunk) -> int:
        """Row by row, with ``line_num`` mapping rows to lines; exact for every malformed case."""
        blines = complete.split(b"\n")
        blines.pop()
        n = len(blines)
        bounds: list[int] = list(accumulate(map(operator.add, map(len, blines), repeat(1)), initial=base))
        bad: dict[int, int] = {}
        try:
            slines = complete.decode(self._encoding).split("\n")
            slines.pop()
        except UnicodeDecodeError:
            slines = []
            for i, bline in enumerate(blines):
                try:
                    slines.append(bline.decode(self._encoding))
                except UnicodeDecodeError as exc:
                    slines.append(bline.decode(self._encoding, "replace"))
                    bad[i] = bounds[i] + exc.start
        tlines = [s + "\n" for s in slines]
        tlines.append("")  # sentinel: swallowed by a record that is still open
        reader = csv.reader(tlines, delimiter=self._delimiter, quotechar=self._quotechar, strict=True)
        first_line = 0  # the line the current reader started on
        prev = 0
        while True:
            error: str | None = None
            row: list[str] | None
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                # strict: a record still open at the sentinel raises here too (ln > n below)
                row = None
                error = _csv_error(exc, self._quotechar)
            ln = max(first_line + reader.line_num, prev + 1)
            if ln > n:  # reached the sentinel: the record from line `prev` is not finished
                break
            if row == []:
                prev = ln
                continue
            if self._too_long(bounds[prev], bounds[ln]):
                # the record's first line is the error; restart parsing on the next line
                self._emit_oversize(out, bounds[prev], bounds[prev + 1], blines[prev])
                prev += 1
                first_line = prev
                reader = csv.reader(
                    islice(tlines, prev, None),
                    delimiter=self._delimiter,
                    quotechar=self._quotechar,
                    strict=True,
                )
                continue
            raw = slines[prev] if ln == prev + 1 else "\n".join(slines[prev:ln])
            if bad:
                first_bad = next((bad[i] for i in range(prev, ln) if i in bad), None)
                if first_bad is not None:
                    row = None
                    error = f"not valid {self._label} at byte {first_bad}"
            self._emit(out, bounds[prev], bounds[ln], row, _strip_cr(raw), error)
            prev = ln
        return bounds[prev] - base

    def _too_long(self, start: int, end: int) -> bool:
        span = end - start
        if span <= self._max:
            return False
        # at end of data the last line's "\n" is virtual and does not count
        return not (end == self._eof_at + 1 and span - 1 <= self._max)

    def _emit(
        self, out: RecordChunk, start: int, end: int, row: list[str] | None, raw: str, error: str | None
    ) -> None:
        if self._need_header:
            self._take_header(row, error, start, end)
            return
        if error is not None:
            out.errors[len(out.rows)] = error
        out.starts.append(start)
        out.ends.append(end)
        out.rows.append(row)
        out.raws.append(raw)

    def _emit_oversize(self, out: RecordChunk, start: int, end: int, raw: bytes) -> None:
        text = raw[:_OVERSIZE_RAW_BYTES].decode(self._encoding, "replace")
        reason = f"unterminated quoted field or record longer than {self._max} bytes"
        self._emit(out, start, end, None, _strip_terminator(text), reason)

    def _take_header(self, row: list[str] | None, error: str | None, start: int, end: int) -> None:
        where = f"the header record (bytes {start}-{end})"
        if row is None:
            raise SourceError(f"{where} cannot be read: {error}")
        names = [name.strip() for name in row]
        for i, name in enumerate(names, 1):
            if not name:
                raise SourceError(f"{where}: column {i} has an empty name; name every column")
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise SourceError(f"{where} names column {name!r} twice; column names must be unique")
            seen.add(name)
        self.header = names
        self.header_end = end
        self._need_header = False


def _csv_error(exc: csv.Error, quotechar: str) -> str:
    """The reject reason for a record csv refused (csv runs with ``strict=True``)."""
    message = str(exc)
    if message.endswith(f"expected after '{quotechar}'"):
        # '"ok"tail': without strict, csv would glue the text to the field and read "oktail"
        return f"not valid CSV: text after the closing quote of a quoted field ({message})"
    return f"not valid CSV: {message}"


def _strip_cr(raw: str) -> str:
    return raw[:-1] if raw.endswith("\r") else raw


def _strip_terminator(raw: str) -> str:
    if raw.endswith("\n"):
        raw = raw[:-1]
    return _strip_cr(raw)


def _bench(rows: int = 200_000, chunk_bytes: int = 1 << 20) -> None:  # pragma: no cover
    import io
    import random
    import time

    rnd = random.Random(7)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([f"col{i}" for i in range(10)])
    for n in range(rows):
        writer.writerow(
            [
                f"user#{n:08d}",
                str(rnd.randrange(10**9)),
                f"{rnd.random():.6f}",
                rnd.choice(["true", "false"]),
                "".join(rnd.choices("abcdefghij klmnop", k=12)),
                "2024-05-01T12:00:00Z",
                str(rnd.randrange(100)),
                rnd.choice(["red", "green", "blue"]),
                "café",
                f"x{n % 97}",
            ]
        )
    plain = buf.getvalue().encode()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([f"col{i}" for i in range(10)])
    for n in range(rows):
        writer.writerow([f"id{n}", "a, b", 'say "hi"', "line1\nline2", "x", "y", "z", "1", "2", "3"])
    quoted = buf.getvalue().encode()
    spec = CsvSpec()
    for name, data in (("plain LF, 10 columns", plain), ("quoted newlines + CRLF, 10 columns", quoted)):
        best = floor = float("inf")
        for _ in range(5):
            t0 = time.process_time()
            floor_rows = list(csv.reader(io.StringIO(data.decode(), newline="")))
            floor = min(floor, time.process_time() - t0)
            dec = CsvDecoder(spec)
            count = 0
            chunks = [data[i : i + chunk_bytes] for i in range(0, len(data), chunk_bytes)]
            t0 = time.process_time()
            for chunk in chunks:
                count += len(dec.feed(chunk).rows)
            count += len(dec.finish().rows)
            best = min(best, time.process_time() - t0)
        assert count == rows == len(floor_rows) - 1, count
        print(
            f"{name}: {rows} records, {len(data) / 1e6:.1f} MB: {best / rows * 1e6:.3f} µs/record "
            f"(csv.reader alone on the whole text: {floor / rows * 1e6:.3f}; ratio {best / floor:.2f}; CPU)"
        )


if __name__ == "__main__":  # pragma: no cover
    import sys

    if "--bench" in sys.argv:
        _bench()
    else:
        print("usage: python -m loader.csvdecode --bench")
