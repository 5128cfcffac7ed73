/**
 * A manifest file cut into its documents without parsing it, so a re-read
 * parses only the documents that changed: one edited Service in a
 * 10k-Service file costs one small parse, not the whole file's.
 *
 *  - YAML: documents start at a `---` line. A document marker at the start
 *    of a line always ends the previous document's content (YAML 1.2,
 *    c-forbidden), so the cut is exact, and each piece parses alone as it
 *    would in place. A file with directives (`%YAML`) is one piece.
 *  - JSON: the elements of a top-level array, or the `items` of a
 *    `kind: List` object, found by a scan that skips strings. The text
 *    between elements must be commas and white space, and the wrapper
 *    around them must parse, else the file is one piece.
 *
 * The cut works on the file's bytes (every cut is at an ASCII byte, so a
 * piece decodes as it would inside the whole text), and a re-read re-cuts
 * only the bytes that changed (`recutManifest`): the common prefix and
 * suffix of the old and new contents keep their pieces, found by memcmp,
 * not by decoding and hashing 11 MB of text.
 *
 * Parsing a piece is manifest.ts's business; this module only cuts.
 */

export interface Piece {
  /** byte offsets in the file, [start, end) */
  start: number;
  end: number;
  /** an element of a JSON array: JSON.parse it (YAML only if that fails) */
  json: boolean;
}

export interface Cut {
  pieces: Piece[];
  /** JSON elements: where their array's [ and ] are */
  array?: { open: number; close: number };
  /** one piece for the whole file (directives, or JSON not shaped as a List) */
  whole: boolean;
}

/** A re-cut: the new cut, and for each new piece the index of the old piece with the same bytes, or -1. */
export interface Recut {
  cut: Cut;
  origin: number[];
}

const isWs = (c: number | undefined) => c === 32 || c === 9 || c === 10 || c === 13;

/** The first byte that is not white space (or a UTF-8 byte order mark). */
function firstByte(buf: Buffer): number {
  let i = buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf ? 3 : 0;
  while (i < buf.length && isWs(buf[i])) i++;
  return i;
}

const isJsonHead = (c: number | undefined) => c === 123 || c === 91; // { [

/** The file's pieces, in order, covering it from start to end. */
export function cutManifest(buf: Buffer): Cut {
  if (isJsonHead(buf[firstByte(buf)])) return cutJson(buf) ?? wholeFile(buf);
  if (hasDirective(buf, 0, buf.length)) return wholeFile(buf);
  return { pieces: yamlPieces(buf, 0, buf.length), whole: false };
}

const wholeFile = (buf: Buffer): Cut => ({ pieces: [{ start: 0, end: buf.length, json: false }], whole: true });

/** The texts of a file's pieces (for tests and callers holding a string). */
export function splitManifest(text: string): Array<{ text: string; json: boolean }> {
  const buf = Buffer.from(text);
  return cutManifest(buf).pieces.map((p) => ({ text: buf.toString('utf8', p.start, p.end), json: p.json }));
}

/**
 * The cut of `buf`, given the cut of the file's previous contents `old`:
 * only the pieces around the changed bytes are cut again. Equal to
 * cutManifest(buf) (a property test holds it to that); null when the
 * change reaches what decides the cut of the whole file (the first
 * non-blank byte, a directive, the JSON wrapper), where only a full cut
 * is exact.
 */
export function recutManifest(old: Buffer, oldCut: Cut, buf: Buffer): Recut | null {
  if (oldCut.whole) return null;
  const prefix = commonPrefix(old, buf);
  const suffix = commonSuffix(old, buf, Math.min(old.length, buf.length) - prefix);
  if (prefix === old.length && prefix === buf.length) return { cut: oldCut, origin: oldCut.pieces.map((_, i) => i) };
  // The format is decided by the first non-blank byte.
  if (prefix <= firstByte(old)) return null;
  const oldEnd = old.length - suffix; // changed bytes: old [prefix, oldEnd), new [prefix, newEnd)
  const delta = buf.length - old.length;
  const pieces = oldCut.pieces;
  let first: number;
  let next: number;
  let from: number;
  let fresh: Piece[] | null;
  if (oldCut.array) {
    const { open, close } = oldCut.array;
    if (prefix <= open || oldEnd > close) return null;
    // Kept: elements that end before the change, and those that start after it.
    first = 0;
    while (first < pieces.length && (pieces[first] as Piece).end <= prefix) first++;
    next = first;
    while (next < pieces.length && (pieces[next] as Piece).start < oldEnd) next++;
    from = first > 0 ? (pieces[first - 1] as Piece).end : open + 1;
    const to = (next < pieces.length ? (pieces[next] as Piece).start : close) + delta;
    fresh = jsonRegion(buf, from, to, first > 0, next < pieces.length);
  } else {
    // A YAML cut point depends on the byte before it and the four from it:
    // the re-cut starts at a cut point whose five bytes are all unchanged,
    // and ends at one whose bytes all are (or at the end of the file).
    first = 0;
    while (first + 1 < pieces.length && (pieces[first + 1] as Piece).start + 4 <= prefix) first++;
    next = first;
    while (next < pieces.length && (pieces[next] as Piece).end <= oldEnd) next++;
    if (next < pieces.length) next++; // the piece holding the change's last byte is re-cut too
    from = (pieces[first] as Piece).start;
    const to = next < pieces.length ? (pieces[next] as Piece).start + delta : buf.length;
    fresh = hasDirective(buf, from, to) ? null : yamlPieces(buf, from, to);
  }
  if (!fresh) return null;
  const shifted = pieces.slice(next).map((p) => ({ start: p.start + delta, end: p.end + delta, json: p.json }));
  const cut: Cut = {
    pieces: [...pieces.slice(0, first), ...fresh, ...shifted],
    whole: false,
    ...(oldCut.array ? { array: { open: oldCut.array.open, close: oldCut.array.close + delta } } : {}),
  };
  const origin = [
    ...pieces.slice(0, first).map((_, i) => i),
    ...fresh.map(() => -1),
    ...shifted.map((_, i) => next + i),
  ];
  return { cut, origin };
}

/** Bytes equal from the start; memcmp over chunks, then byte by byte in the one that differs. */
function commonPrefix(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  const CHUNK = 65536;
  let i = 0;
  while (i + CHUNK <= n && a.compare(b, i, i + CHUNK, i, i + CHUNK) === 0) i += CHUNK;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

/** Bytes equal from the end, at most `max`. */
function commonSuffix(a: Buffer, b: Buffer, max: number): number {
  const CHUNK = 65536;
  let k = 0;
  while (k + CHUNK <= max && a.compare(b, b.length - k - CHUNK, b.length - k, a.length - k - CHUNK, a.length - k) === 0) k += CHUNK;
  while (k < max && a[a.length - 1 - k] === b[b.length - 1 - k]) k++;
  return k;
}

/** A `%` directive at the start of a line in [from, to). */
function hasDirective(buf: Buffer, from: number, to: number): boolean {
  return (from === 0 && buf[0] === 37) || buf.subarray(from, to).includes('\n%');
}

/**
 * The YAML pieces of [from, to), where `from` is the start of the file or of
 * a document marker, and `to` the end of the file or the start of one.
 */
function yamlPieces(buf: Buffer, from: number, to: number): Piece[] {
  const out: Piece[] = [];
  let start = from;
  // indexOf, not a regex over decoded text: a 10 MB file is cut in a few ms.
  for (let at = buf.indexOf('---', from); at >= 0 && at + 3 <= to; at = buf.indexOf('---', at + 1)) {
    if (at > 0 && buf[at - 1] !== 10) continue;
    // "---" then white space or the end: a marker ("----" or "---x" is content)
    const next = buf[at + 3];
    if (!(next === undefined || next === 32 || next === 9 || next === 10 || next === 13)) continue;
    if (at > start) out.push({ start, end: at, json: false });
    start = at;
  }
  out.push({ start, end: to, json: false });
  return out;
}

function cutJson(buf: Buffer): Cut | null {
  const found = jsonArray(buf);
  if (!found) return null;
  const { open } = found;
  const elements = scanElements(buf, open + 1, buf.length);
  if (!elements || elements.stop >= buf.length) return null;
  const close = elements.stop;
  // The wrapper, with the elements taken out, must be JSON, and a List if it is an object.
  let wrapper: unknown;
  try {
    wrapper = JSON.parse(buf.toString('utf8', 0, open + 1) + buf.toString('utf8', close));
  } catch {
    return null;
  }
  if (!Array.isArray(wrapper) && (wrapper as { kind?: unknown }).kind !== 'List') return null;
  if (!gapsOk(buf, open + 1, close, elements.items, false, false)) return null;
  return { pieces: elements.items, array: { open, close }, whole: false };
}

/** New elements between kept ones: [from, to) must hold whole elements and their separators only. */
function jsonRegion(buf: Buffer, from: number, to: number, afterElement: boolean, beforeElement: boolean): Piece[] | null {
  const elements = scanElements(buf, from, to);
  if (!elements || elements.stop !== to) return null;
  return gapsOk(buf, from, to, elements.items, afterElement, beforeElement) ? elements.items : null;
}

/**
 * Between elements a comma; before the first and after the last of the
 * array, white space only. `afterElement`/`beforeElement`: [from, to) has
 * a kept element on that side.
 */
function gapsOk(buf: Buffer, from: number, to: number, items: Piece[], afterElement: boolean, beforeElement: boolean): boolean {
  let prev = from;
  for (let i = 0; i <= items.length; i++) {
    const end = i < items.length ? (items[i] as Piece).start : to;
    const between = (i > 0 || afterElement) && (i < items.length || beforeElement);
    let commas = 0;
    for (let j = prev; j < end; j++) {
      const c = buf[j];
      if (c === 44) commas++;
      else if (!isWs(c)) return false;
    }
    if (commas !== (between ? 1 : 0)) return false;
    if (i < items.length) prev = (items[i] as Piece).end;
  }
  return true;
}

/**
 * The object and array elements of an array from `from` (just inside its
 * [, or between two of its elements) up to `to` or the ] that closes it
 * (`stop`). null for what this cut does not handle: a scalar element, a
 * string or bracket left open at `to`.
 */
function scanElements(buf: Buffer, from: number, to: number): { items: Piece[]; stop: number } | null {
  const items: Piece[] = [];
  let depth = 0;
  let itemStart = -1;
  for (let i = from; i < to; i++) {
    const c = buf[i] as number;
    if (c === 34) {
      const j = stringEnd(buf, i, to);
      if (j < 0) return null;
      i = j;
      continue;
    }
    if (c === 123 || c === 91) {
      if (depth === 0) itemStart = i;
      depth++;
      continue;
    }
    if (c === 125 || c === 93) {
      if (depth === 0) return c === 93 ? { items, stop: i } : null;
      depth--;
      if (depth === 0) items.push({ start: itemStart, end: i + 1, json: true });
      continue;
    }
    // Anything else outside a string: a scalar. Inside an element it is that
    // element's business; directly in the array it is a scalar element.
    if (depth === 0 && !(c === 44 || c === 58 || isWs(c))) return null;
  }
  return depth === 0 ? { items, stop: to } : null;
}

/** The closing quote of the string opening at `i` (one not escaped by an odd run of backslashes), or -1. */
function stringEnd(buf: Buffer, i: number, to: number): number {
  let j = i + 1;
  for (;;) {
    j = buf.indexOf(34, j);
    if (j < 0 || j >= to) return -1;
    let b = j - 1;
    while (buf[b] === 92) b--;
    if ((j - 1 - b) % 2 === 0) return j;
    j++;
  }
}

/**
 * Where the element array starts (its [): the file's own when it is an
 * array, else the `items` of the top-level object. null when not found.
 */
function jsonArray(buf: Buffer): { open: number } | null {
  const n = buf.length;
  const top = firstByte(buf);
  if (buf[top] === 91) return { open: top };
  let depth = 0;
  let lastKey = '';
  for (let i = top; i < n; i++) {
    const c = buf[i] as number;
    if (c === 34) {
      const j = stringEnd(buf, i, n);
      if (j < 0) return null;
      if (depth === 1) lastKey = buf.toString('utf8', i + 1, j);
      i = j;
      continue;
    }
    if (c === 123 || c === 91) {
      depth++;
      if (c === 91 && depth === 2 && lastKey === 'items') return { open: i };
      continue;
    }
    if (c === 125 || c === 93) {
      depth--;
      if (depth <= 0) return null;
    }
  }
  return null;
}
