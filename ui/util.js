// Bytes, text and DOM helpers of the console. Keys and values are bytes on
// the wire (base64 in the JSON gateway); they are shown as text when they
// are printable UTF-8 and escaped (\xNN) or dumped in hex otherwise.

const strict = new TextDecoder('utf-8', { fatal: true });
export const encoder = new TextEncoder();

/** Uint8Array -> base64 (the gateway's encoding of `bytes`). */
export function toB64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

/** base64 (absent = empty) -> Uint8Array. */
export function fromB64(s) {
  if (!s) return new Uint8Array(0);
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** The bytes as a string when they are valid UTF-8, else null. */
export function utf8(bytes) {
  try {
    return strict.decode(bytes);
  } catch {
    return null;
  }
}

/** Whether a decoded string has no control characters but tab and newline. */
export function printable(s) {
  // eslint-disable-next-line no-control-regex
  return !/[\u0000-\u0008\u000b-\u001f\u007f]/.test(s);
}

/**
 * A key for display: its text when printable UTF-8 without backslashes,
 * else \xNN escapes (a backslash too), so that parseBytes reads back the
 * same bytes.
 */
export function showBytes(bytes) {
  const s = utf8(bytes);
  if (s !== null && printable(s) && !s.includes('\n') && !s.includes('\\')) return s;
  let out = '';
  for (const b of bytes) {
    out += b >= 0x20 && b < 0x7f && b !== 0x5c ? String.fromCharCode(b) : '\\x' + b.toString(16).padStart(2, '0');
  }
  return out;
}

/** Reads a key typed by a person: \xNN escapes become bytes. */
export function parseBytes(text) {
  if (!text.includes('\\x')) return encoder.encode(text);
  const parts = [];
  let i = 0;
  while (i < text.length) {
    const m = /^\\x([0-9a-fA-F]{2})/.exec(text.slice(i));
    if (m) {
      parts.push(new Uint8Array([parseInt(m[1], 16)]));
      i += 4;
    } else {
      const next = text.indexOf('\\x', i + 1);
      const end = next < 0 ? text.length : next;
      parts.push(encoder.encode(text.slice(i, end)));
      i = end;
    }
  }
  return concat(...parts);
}

export function concat(...arrays) {
  const out = new Uint8Array(arrays.reduce((n, a) => n + a.length, 0));
  let at = 0;
  for (const a of arrays) {
    out.set(a, at);
    at += a.length;
  }
  return out;
}

/** Byte-wise order of two keys: negative, 0 or positive. */
export function compareBytes(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

export function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function startsWith(bytes, prefix) {
  return bytes.length >= prefix.length && equalBytes(bytes.subarray(0, prefix.length), prefix);
}

/**
 * The end of the range of every key starting with `prefix` (etcd's
 * GetPrefixRangeEnd): the prefix with its last byte below 0xff incremented
 * and the rest cut; "\0" (every key) for an empty or all-0xff prefix.
 */
export function prefixEnd(prefix) {
  for (let i = prefix.length - 1; i >= 0; i--) {
    if (prefix[i] < 0xff) {
      const end = prefix.slice(0, i + 1);
      end[i] += 1;
      return end;
    }
  }
  return new Uint8Array([0]);
}

/** The smallest key after `key`: key + "\0". */
export function keySuccessor(key) {
  return concat(key, new Uint8Array([0]));
}

/** A hex dump, 16 bytes a line, with the printable ASCII beside it. */
export function hexDump(bytes, max = 64 * 1024) {
  const lines = [];
  const n = Math.min(bytes.length, max);
  for (let off = 0; off < n; off += 16) {
    const row = bytes.subarray(off, Math.min(off + 16, n));
    const hex = Array.from(row, (b) => b.toString(16).padStart(2, '0')).join(' ');
    const ascii = Array.from(row, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
    lines.push(off.toString(16).padStart(8, '0') + '  ' + hex.padEnd(48) + '  |' + ascii + '|');
  }
  if (bytes.length > n) lines.push(`… ${bytes.length - n} more bytes`);
  return lines.join('\n');
}

/** Bytes in a person's units (1 KiB = 1024 B). */
export function fmtSize(n) {
  n = Number(n || 0);
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let u = 0;
  while (n >= 1024 && u < units.length - 1) {
    n /= 1024;
    u++;
  }
  return (u === 0 ? String(n) : n.toFixed(1)) + ' ' + units[u];
}

/** A uint64 the gateway sends as a decimal string, in hex (etcd's member and lease ids). */
export function hexId(id) {
  if (id === undefined || id === null || id === '') return '0';
  try {
    return BigInt(id).toString(16);
  } catch {
    return String(id);
  }
}

/** A lease id typed in hex (as etcdctl prints them) -> decimal string; '' -> '0'. */
export function parseHexId(text) {
  const t = text.trim().replace(/^0x/i, '');
  if (t === '') return '0';
  if (!/^[0-9a-fA-F]{1,16}$/.test(t)) throw new Error(`lease ID "${text}" is not hexadecimal`);
  return BigInt('0x' + t).toString(10);
}

/**
 * A DOM element: el('td', {class: 'x', dataset: {k: 'v'}}, child, 'text').
 * Children that are strings become text nodes (never HTML).
 */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}
