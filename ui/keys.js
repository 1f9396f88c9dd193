// The keys view: a tree over '/'-separated keys loaded one directory page
// at a time (never a scan of the whole store), a key's value as text, JSON
// or hex, its lease and TTL, its history of versions, put and delete.

import { call } from './api.js';
import { confirmAction, showError } from './dialogs.js';
import {
  el,
  encoder,
  equalBytes,
  fmtSize,
  fromB64,
  hexDump,
  hexId,
  keySuccessor,
  parseBytes,
  parseHexId,
  compareBytes,
  prefixEnd,
  printable,
  showBytes,
  startsWith,
  toB64,
  utf8,
} from './util.js';

const SLASH = 0x2f;
/** Children shown per directory page. */
export const PAGE = 100;
/** Keys asked for per range request while listing a directory: the
 * larger when the last request found many children, the smaller when it
 * found few (large subdirectories, hopped over one request each). */
const BATCH = 100;
const SMALL_BATCH = 10;
/** A window counting more keys than this is narrowed by one level next time. */
const WIDE_WINDOW = 10000;
/** Range requests one page may take (deep directories are hopped over one request each). */
const MAX_REQUESTS = 256;
/** Versions read back per "history" step. */
const HISTORY_STEP = 20;

/** A range_end meaning "every key from the start key on". */
const ALL = new Uint8Array([0]);

/** The listChildren state of the first page of `dir`, whose first key is unknown. */
function firstPage(dir) {
  return { cursor: dir.length ? dir : ALL, anchor: null, level: null };
}

/**
 * One page of the children of directory `dir` (bytes ending in '/', or
 * empty for the root): {children: [{dir, key, first}], next} where a
 * directory child's key is its prefix and `first` its first key, and
 * `next` is the state to continue from (null at the end).
 *
 * etcd's Range counts every key up to range_end however small the limit,
 * so listing asks for narrow windows: [cursor, end of the prefix that the
 * anchor key shares at level L), from the longest prefix down to the
 * directory itself, and directories already seen are hopped over. A page
 * of a directory whose first key is known (from its parent's listing)
 * never counts the whole directory; only the root's first page does.
 * `state` is {cursor, anchor, level}: the first key not yet listed, a key
 * at or near it, and the level to start the next window at.
 */
export async function listChildren(dir, state) {
  const dirEnd = dir.length ? prefixEnd(dir) : ALL;
  const children = [];
  let { cursor, anchor, level } = state;
  let requests = 0;
  let batch = BATCH;
  while (children.length < PAGE && requests < MAX_REQUESTS) {
    anchor = anchor || cursor;
    let got = null;
    const start = level == null ? anchor.length : level;
    for (let L = Math.min(anchor.length, start); L >= dir.length; L--) {
      let end = L === dir.length ? dirEnd : prefixEnd(anchor.subarray(0, L));
      if (end === ALL || (end.length === 1 && end[0] === 0)) end = dirEnd;
      if (end !== dirEnd && compareBytes(end, cursor) <= 0) continue;
      requests++;
      const r = await call('kv/range', { key: toB64(cursor), range_end: toB64(end), limit: batch, keys_only: true, serializable: true });
      if (r.kvs && r.kvs.length) {
        got = { r, L, end };
        break;
      }
      if (end === dirEnd) return { children, next: null };
      // Nothing in [cursor, end): every key left is at or after end.
      cursor = end;
    }
    if (!got) return { children, next: null };
    let last = null;
    const before = children.length;
    for (const kv of got.r.kvs) {
      const key = fromB64(kv.key);
      if (last && last.dir && startsWith(key, last.key)) continue;
      const slash = key.subarray(dir.length).indexOf(SLASH);
      last = slash < 0 ? { dir: false, key } : { dir: true, key: key.slice(0, dir.length + slash + 1), first: key };
      children.push(last);
      if (children.length >= PAGE) break;
    }
    const after = last.dir ? prefixEnd(last.key) : keySuccessor(last.key);
    const full = children.length >= PAGE;
    if (!got.r.more && !full) {
      // The window is exhausted.
      if (got.end === dirEnd) return { children, next: null };
      cursor = compareBytes(after, got.end) > 0 ? after : got.end;
    } else {
      cursor = after;
    }
    if (last.dir && after.length === 1 && after[0] === 0) return { children, next: null };
    if (dir.length === 0 || compareBytes(cursor, dirEnd) < 0) {
      anchor = null;
      // Where the next window starts: the same level while the window has
      // more keys (one narrower when it counted many), one level wider
      // once it is exhausted.
      const wide = Number(got.r.count || 0) > WIDE_WINDOW;
      if (got.r.more) level = wide ? got.L + 1 : got.L;
      else level = Math.max(got.L - 1, dir.length);
      batch = children.length - before >= SMALL_BATCH ? BATCH : SMALL_BATCH;
    } else {
      return { children, next: null };
    }
  }
  return { children, next: { cursor, anchor: null, level } };
}

/** How a value is best shown: 'json', 'text' or 'hex'. */
export function valueKind(bytes) {
  const s = utf8(bytes);
  if (s === null || !printable(s)) return 'hex';
  const t = s.trim();
  if ((t.startsWith('{') || t.startsWith('[')) && t.length > 1) {
    try {
      JSON.parse(t);
      return 'json';
    } catch {
      return 'text';
    }
  }
  return 'text';
}

function renderValue(bytes, kind) {
  if (kind === 'json') {
    try {
      return el('pre', { class: 'value json' }, JSON.stringify(JSON.parse(utf8(bytes)), null, 2));
    } catch {
      return el('pre', { class: 'value error' }, 'not JSON');
    }
  }
  if (kind === 'text') {
    const s = utf8(bytes);
    return s === null ? el('pre', { class: 'value error' }, 'not UTF-8') : el('pre', { class: 'value' }, s);
  }
  return el('pre', { class: 'value hex' }, hexDump(bytes));
}

export class KeysView {
  constructor(root, { onWatch }) {
    this.root = root;
    this.tree = root.querySelector('#tree');
    this.detail = root.querySelector('#key-detail');
    this.onWatch = onWatch;
    this.base = new Uint8Array(0);
    this.loaded = false;
    root.querySelector('#goto').addEventListener('submit', (e) => {
      e.preventDefault();
      const text = root.querySelector('#goto-key').value;
      if (text === '' || text.endsWith('/')) this.showRoot(parseBytes(text));
      else this.open(parseBytes(text));
    });
    root.querySelector('#new-key').addEventListener('click', () => this.edit(null, false));
  }

  /** First time the view is shown: the root directory. */
  show() {
    if (!this.loaded) {
      this.loaded = true;
      this.showRoot(this.base);
    }
  }

  async showRoot(prefix) {
    this.base = prefix;
    const top = el('li', { class: 'node dir open root', dataset: { key: toB64(prefix) } });
    top.append(el('span', { class: 'name' }, prefix.length ? showBytes(prefix) : '(all keys)'));
    if (prefix.length) {
      top.append(
        el('button', { type: 'button', class: 'link', onclick: () => this.showRoot(new Uint8Array(0)) }, '↑ all keys'),
      );
    }
    const ul = el('ul', { class: 'children' });
    top.append(ul);
    this.tree.replaceChildren(top);
    await this.loadInto(ul, prefix, firstPage(prefix));
  }

  /** Lists a page of `prefix`'s children from `state` (see listChildren) into `ul`. */
  async loadInto(ul, prefix, state) {
    const loading = el('li', { class: 'hint loading' }, 'loading…');
    ul.append(loading);
    let page;
    try {
      page = await listChildren(prefix, state);
    } catch (e) {
      loading.replaceWith(el('li', { class: 'error' }, e.message));
      return;
    }
    const items = page.children.map((c) => this.node(prefix, c));
    if (!items.length && !page.next && ul.childElementCount === 1) items.push(el('li', { class: 'hint' }, '(empty)'));
    if (page.next) {
      const more = el('li', { class: 'more' });
      more.append(
        el(
          'button',
          {
            type: 'button',
            class: 'link',
            onclick: () => {
              more.remove();
              this.loadInto(ul, prefix, page.next);
            },
          },
          `more…`,
        ),
      );
      items.push(more);
    }
    loading.replaceWith(...items);
  }

  node(parent, child) {
    const name = showBytes(child.key.subarray(parent.length));
    if (!child.dir) {
      return el(
        'li',
        { class: 'node leaf', dataset: { key: toB64(child.key) } },
        el('a', { href: '#keys', class: 'name', onclick: (e) => (e.preventDefault(), this.open(child.key)) }, name || '(the prefix itself)'),
      );
    }
    const li = el('li', { class: 'node dir', dataset: { key: toB64(child.key) } });
    const ul = el('ul', { class: 'children' });
    const toggle = () => {
      if (li.classList.toggle('open') && !ul.childElementCount) {
        this.loadInto(ul, child.key, { cursor: child.key, anchor: child.first, level: null });
      }
    };
    li.append(el('a', { href: '#keys', class: 'name', onclick: (e) => (e.preventDefault(), toggle()) }, name), ul);
    return li;
  }

  /** Reloads the deepest open directory holding `key` (after a put or delete). */
  async refreshAround(key) {
    let best = null;
    for (const li of this.tree.querySelectorAll('li.dir.open')) {
      const prefix = fromB64(li.dataset.key);
      if (startsWith(key, prefix) && (!best || prefix.length > best.prefix.length)) best = { li, prefix };
    }
    if (!best) return;
    const ul = best.li.querySelector(':scope > ul');
    ul.replaceChildren();
    await this.loadInto(ul, best.prefix, firstPage(best.prefix));
  }

  /** Shows `key`: value, metadata, lease, history and actions. */
  async open(key) {
    this.current = key;
    for (const a of this.tree.querySelectorAll('li.selected')) a.classList.remove('selected');
    const li = this.tree.querySelector(`li.leaf[data-key="${CSS.escape(toB64(key))}"]`);
    if (li) li.classList.add('selected');
    let r;
    try {
      r = await call('kv/range', { key: toB64(key) });
    } catch (e) {
      this.detail.replaceChildren(el('p', { class: 'error' }, e.message));
      return;
    }
    if (this.current !== key) return;
    const kv = (r.kvs || [])[0];
    const title = el('h2', { class: 'mono key-name' }, showBytes(key));
    if (!kv) {
      this.detail.replaceChildren(
        title,
        el('p', { class: 'hint', id: 'key-missing' }, `no such key at revision ${r.header.revision}`),
        el('button', { type: 'button', onclick: () => this.edit({ key, value: new Uint8Array(0) }, false) }, 'Create it…'),
      );
      return;
    }
    const value = fromB64(kv.value);
    const kind = valueKind(value);
    const viewBox = el('div', { class: 'value-box' }, renderValue(value, kind));
    const tabs = el(
      'div',
      { class: 'tabs' },
      ['text', 'json', 'hex'].map((k) =>
        el(
          'button',
          {
            type: 'button',
            class: k === kind ? 'tab active' : 'tab',
            dataset: { kind: k },
            onclick: (e) => {
              for (const b of tabs.children) b.classList.toggle('active', b === e.target);
              viewBox.replaceChildren(renderValue(this.shownValue || value, k));
            },
          },
          k === 'json' ? 'JSON' : k[0].toUpperCase() + k.slice(1),
        ),
      ),
    );
    this.shownValue = value;
    const lease = el('span', { id: 'key-lease' }, kv.lease ? hexId(kv.lease) : 'none');
    const meta = el(
      'table',
      { class: 'meta' },
      el('tr', {}, el('th', {}, 'create revision'), el('td', {}, kv.create_revision)),
      el('tr', {}, el('th', {}, 'mod revision'), el('td', { id: 'key-mod' }, kv.mod_revision)),
      el('tr', {}, el('th', {}, 'version'), el('td', { id: 'key-version' }, kv.version)),
      el('tr', {}, el('th', {}, 'size'), el('td', {}, fmtSize(value.length))),
      el('tr', {}, el('th', {}, 'lease'), el('td', {}, lease)),
    );
    const history = el('div', { class: 'history' });
    this.detail.replaceChildren(
      title,
      el(
        'div',
        { class: 'row' },
        el(
          'button',
          {
            type: 'button',
            id: 'key-edit',
            // A binary value cannot round-trip through a text box.
            disabled: kind === 'hex',
            title: kind === 'hex' ? 'a binary value: put it with etcdctl or kvd ctl' : null,
            onclick: () => this.edit({ key, value, lease: kv.lease }, true),
          },
          'Edit…',
        ),
        el('button', { type: 'button', id: 'key-delete', class: 'danger', onclick: () => this.remove(key) }, 'Delete…'),
        el('button', { type: 'button', id: 'key-watch', onclick: () => this.onWatch(key, false) }, 'Watch'),
      ),
      meta,
      tabs,
      viewBox,
      el('h3', {}, 'History'),
      history,
    );
    if (kv.lease) this.showLease(kv.lease, lease);
    this.showHistory(key, kv, history, viewBox, tabs);
  }

  async showLease(id, target) {
    try {
      const t = await call('lease/timetolive', { ID: id });
      const ttl = Number(t.TTL ?? 0);
      target.textContent =
        ttl < 0 ? `${hexId(id)} (expired)` : `${hexId(id)} · TTL ${ttl} s of ${t.grantedTTL ?? 0} s`;
    } catch (e) {
      target.textContent = `${hexId(id)} (${e.message})`;
    }
  }

  /** Reads versions back one revision before each mod revision, HISTORY_STEP at a time. */
  async showHistory(key, kv, box, viewBox, tabs) {
    const table = el(
      'table',
      { class: 'history-table' },
      el('tr', {}, el('th', {}, 'mod revision'), el('th', {}, 'version'), el('th', {}, 'size'), el('th', {}, 'value')),
    );
    box.replaceChildren(table);
    const show = (v) => {
      const bytes = fromB64(v.value);
      const s = utf8(bytes);
      const preview = s !== null && printable(s) ? s.slice(0, 80) : hexDump(bytes.subarray(0, 16)).split('\n')[0];
      table.append(
        el(
          'tr',
          {
            class: 'version',
            dataset: { revision: v.mod_revision },
            onclick: () => {
              this.shownValue = bytes;
              const active = tabs.querySelector('.active');
              viewBox.replaceChildren(
                el('p', { class: 'hint' }, `version ${v.version} at revision ${v.mod_revision}`),
                renderValue(bytes, active ? active.dataset.kind : valueKind(bytes)),
              );
            },
          },
          el('td', {}, v.mod_revision),
          el('td', {}, v.version),
          el('td', {}, fmtSize(bytes.length)),
          el('td', { class: 'mono' }, preview),
        ),
      );
    };
    let cur = kv;
    show(cur);
    const step = async () => {
      for (let n = 0; n < HISTORY_STEP; n++) {
        if (Number(cur.version) <= 1) {
          box.append(el('p', { class: 'hint' }, `created at revision ${cur.create_revision}`));
          return;
        }
        let r;
        try {
          r = await call('kv/range', { key: toB64(key), revision: String(BigInt(cur.mod_revision) - 1n) });
        } catch (e) {
          box.append(el('p', { class: 'hint' }, `older versions: ${e.message}`));
          return;
        }
        const prev = (r.kvs || [])[0];
        if (!prev) return;
        cur = prev;
        show(cur);
      }
      const more = el('button', { type: 'button', class: 'link', onclick: () => (more.remove(), step()) }, 'older…');
      box.append(more);
    };
    await step();
  }

  /** The put dialog: a new key (`kv` null), a suggested one, or an `existing` key's new value. */
  edit(kv, existing = false) {
    const dialog = document.getElementById('editor');
    const keyInput = dialog.querySelector('#editor-key');
    const valueInput = dialog.querySelector('#editor-value');
    const leaseInput = dialog.querySelector('#editor-lease');
    const error = dialog.querySelector('#editor-error');
    dialog.querySelector('#editor-title').textContent = kv ? 'Edit key' : 'New key';
    keyInput.value = kv ? showBytes(kv.key) : showBytes(this.base);
    keyInput.readOnly = existing;
    valueInput.value = kv ? (utf8(kv.value) ?? '') : '';
    leaseInput.value = kv && kv.lease ? hexId(kv.lease) : '';
    error.textContent = '';
    const form = dialog.querySelector('#editor-form');
    form.onsubmit = async (e) => {
      e.preventDefault();
      let key;
      let lease;
      try {
        // An existing key keeps its exact bytes.
        key = existing ? kv.key : parseBytes(keyInput.value);
        lease = parseHexId(leaseInput.value);
        if (!key.length) throw new Error('the key is empty');
      } catch (err) {
        error.textContent = err.message;
        return;
      }
      const value = encoder.encode(valueInput.value);
      const ok = await confirmAction(
        'Put this key?',
        el('p', {}, 'Put ', el('code', {}, showBytes(key)), ` = ${fmtSize(value.length)}`, lease !== '0' ? ` with lease ${hexId(lease)}` : ''),
      );
      if (!ok) return;
      try {
        await call('kv/put', { key: toB64(key), value: toB64(value), lease });
      } catch (err) {
        error.textContent = err.message;
        return;
      }
      dialog.close();
      await this.refreshAround(key);
      await this.open(key);
    };
    dialog.querySelector('#editor-cancel').onclick = () => dialog.close();
    dialog.showModal();
    (keyInput.readOnly ? valueInput : keyInput).focus();
  }

  async remove(key) {
    const ok = await confirmAction('Delete this key?', el('p', {}, 'Delete ', el('code', {}, showBytes(key)), '? This cannot be undone.'));
    if (!ok) return;
    try {
      const r = await call('kv/deleterange', { key: toB64(key) });
      if (!equalBytes(this.current || new Uint8Array(0), key)) return;
      this.detail.replaceChildren(
        el('h2', { class: 'mono key-name' }, showBytes(key)),
        el('p', { class: 'hint', id: 'key-deleted' }, `deleted at revision ${r.header.revision}`),
      );
      await this.refreshAround(key);
    } catch (e) {
      showError(e.message);
    }
  }
}
