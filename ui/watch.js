// The watch view: a live feed of a key's or prefix's events over the
// gateway's streaming /v3/watch, with pause (events are held, up to
// HELD_MAX, and shown on resume) and a filter on key, value and type.

import { ApiError, login, stream } from './api.js';
import { el, fromB64, parseBytes, prefixEnd, showBytes, toB64, utf8, printable } from './util.js';

/** Rows kept in the feed; older ones are dropped from the page. */
const ROWS_MAX = 1000;
/** Events held while paused; beyond it they are counted, not kept. */
const HELD_MAX = 10000;

function preview(b64) {
  const bytes = fromB64(b64);
  const s = utf8(bytes);
  return s !== null && printable(s) ? s.slice(0, 200) : showBytes(bytes.subarray(0, 64));
}

export class WatchView {
  constructor(root) {
    this.root = root;
    this.$ = (id) => root.querySelector('#' + id);
    this.tbody = root.querySelector('#watch-feed tbody');
    this.abort = null;
    this.paused = false;
    this.held = [];
    this.skipped = 0;
    this.total = 0;
    this.$('watch-form').addEventListener('submit', (e) => {
      e.preventDefault();
      this.start();
    });
    this.$('watch-stop').addEventListener('click', () => this.stop('stopped'));
    this.$('watch-pause').addEventListener('click', () => this.togglePause());
    this.$('watch-clear').addEventListener('click', () => {
      this.tbody.replaceChildren();
      this.total = 0;
      this.status();
    });
    this.$('watch-filter').addEventListener('input', () => this.applyFilter());
    this.$('watch-type').addEventListener('change', () => this.applyFilter());
  }

  /** Starts watching `key` (as a prefix when `prefix`). */
  watch(key, prefix) {
    this.$('watch-key').value = showBytes(key);
    this.$('watch-prefix').checked = prefix;
    this.start();
  }

  async start() {
    this.stop();
    const key = parseBytes(this.$('watch-key').value);
    const prefix = this.$('watch-prefix').checked;
    const request = { key: toB64(key.length ? key : new Uint8Array([0])) };
    if (prefix || !key.length) request.range_end = toB64(key.length ? prefixEnd(key) : new Uint8Array([0]));
    const rev = this.$('watch-rev').value;
    if (rev) request.start_revision = rev;
    if (this.$('watch-prev').checked) request.prev_kv = true;
    const abort = new AbortController();
    this.abort = abort;
    this.paused = false;
    this.held = [];
    this.skipped = 0;
    this.$('watch-pause').textContent = 'Pause';
    this.$('watch-stop').disabled = false;
    this.$('watch-pause').disabled = false;
    this.state = 'connecting';
    this.status();
    try {
      await stream(
        'watch',
        { create_request: request },
        (result) => {
          if (result.created) {
            this.state = `watching since revision ${Number(result.header?.revision ?? 0) + 1}`;
            this.status();
          }
          // A refused watch is a canceled one (auth included): HTTP 200.
          if (result.canceled) throw new ApiError(200, result.cancel_reason || 'watch canceled by the member');
          for (const ev of result.events || []) this.event(ev);
        },
        abort.signal,
      );
      if (this.abort === abort) this.stop('the member ended the watch');
    } catch (e) {
      if (this.abort !== abort) return;
      if (e instanceof ApiError && e.needsLogin && !this.retried) {
        this.retried = true;
        await login(e);
        this.start();
        return;
      }
      this.stop(e.name === 'AbortError' ? 'stopped' : `failed: ${e.message}`);
    }
    this.retried = false;
  }

  stop(why) {
    if (this.abort) {
      const a = this.abort;
      this.abort = null;
      a.abort();
    }
    this.flushHeld();
    this.$('watch-stop').disabled = true;
    this.$('watch-pause').disabled = true;
    if (why) {
      this.state = why;
      this.status();
    }
  }

  togglePause() {
    this.paused = !this.paused;
    this.$('watch-pause').textContent = this.paused ? 'Resume' : 'Pause';
    if (!this.paused) this.flushHeld();
    this.status();
  }

  flushHeld() {
    const held = this.held;
    this.held = [];
    for (const ev of held) this.append(ev);
    if (this.skipped) {
      this.tbody.prepend(el('tr', { class: 'skipped' }, el('td', { colspan: 6 }, `${this.skipped} events not kept while paused`)));
      this.skipped = 0;
    }
    this.status();
  }

  event(ev) {
    this.total++;
    if (this.paused) {
      if (this.held.length < HELD_MAX) this.held.push(ev);
      else this.skipped++;
      this.status();
      return;
    }
    this.append(ev);
    this.status();
  }

  append(ev) {
    const type = ev.type || 'PUT';
    const kv = ev.kv || {};
    const row = el(
      'tr',
      { class: 'event ' + type.toLowerCase(), dataset: { type, key: kv.key || '' } },
      el('td', { class: 'num' }, kv.mod_revision || ''),
      el('td', {}, type),
      el('td', { class: 'mono' }, showBytes(fromB64(kv.key))),
      el('td', { class: 'mono' }, type === 'PUT' ? preview(kv.value) : ''),
      el('td', { class: 'num' }, type === 'PUT' ? kv.version || '' : ''),
      el('td', { class: 'mono' }, ev.prev_kv ? preview(ev.prev_kv.value) : ''),
    );
    row.hidden = !this.matches(row);
    this.tbody.prepend(row);
    while (this.tbody.childElementCount > ROWS_MAX) this.tbody.lastElementChild.remove();
  }

  matches(row) {
    const type = this.$('watch-type').value;
    const text = this.$('watch-filter').value.toLowerCase();
    if (type && row.dataset.type !== type) return false;
    return !text || row.textContent.toLowerCase().includes(text);
  }

  applyFilter() {
    for (const row of this.tbody.querySelectorAll('tr.event')) row.hidden = !this.matches(row);
    this.status();
  }

  /** The status line, redrawn at most once a frame (events can come thousands a second). */
  status() {
    if (this.statusQueued) return;
    this.statusQueued = true;
    requestAnimationFrame(() => {
      this.statusQueued = false;
      this.drawStatus();
    });
  }

  drawStatus() {
    const shown = this.tbody.querySelectorAll('tr.event:not([hidden])').length;
    const held = this.paused ? ` · paused, ${this.held.length + this.skipped} held` : '';
    this.$('watch-status').textContent = `${this.state || 'idle'} · ${this.total} events · ${shown} shown${held}`;
  }
}
