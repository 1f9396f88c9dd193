// The cluster view: members with each one's own Status (leader, Raft term
// and indexes, database size, alarms), and plots of one member's traffic
// computed from its Prometheus metrics (/metrics), sampled every 2 s.

import { call } from './api.js';
import { el, fmtSize, hexId } from './util.js';

const POLL_MS = 2000;
const KEEP_SECONDS = 300;
const STATUS_TIMEOUT_MS = 1500;

// What each plot shows: a counter's rate, or a histogram's p99 over the
// last sample interval (Prometheus' histogram_quantile over bucket deltas).
const PLOTS = [
  { id: 'puts', title: 'puts/s', counter: 'etcd_mvcc_put_total' },
  { id: 'reads', title: 'reads/s (ranges)', counter: 'etcd_mvcc_range_total' },
  { id: 'events', title: 'watch events/s', counter: 'etcd_debugging_mvcc_events_total' },
  { id: 'proposal', title: 'proposal latency p99 (ms)', histogram: 'kvd_server_proposal_duration_seconds' },
  { id: 'fsync', title: 'fsync latency p99 (ms)', histogram: 'etcd_disk_wal_fsync_duration_seconds' },
];

/**
 * Prometheus text format -> { counters: Map(name -> value),
 * buckets: Map(name -> [[le, cumulative count], …]) }. Only unlabelled
 * samples and histogram buckets (the only ones the console reads).
 */
export function parseMetrics(text) {
  const counters = new Map();
  const buckets = new Map();
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const [, name, labels, raw] = m;
    const value = Number(raw);
    if (!labels) {
      counters.set(name, value);
    } else if (name.endsWith('_bucket')) {
      const le = /le="([^"]+)"/.exec(labels);
      if (!le) continue;
      const base = name.slice(0, -'_bucket'.length);
      if (!buckets.has(base)) buckets.set(base, []);
      buckets.get(base).push([le[1] === '+Inf' ? Infinity : Number(le[1]), value]);
    }
  }
  return { counters, buckets };
}

/** The q-quantile of the observations between two bucket lists, or null when there were none. */
export function quantile(q, before, after) {
  if (!after) return null;
  const deltas = after.map(([le, n], i) => [le, n - (before && before[i] ? before[i][1] : 0)]);
  const total = deltas.length ? deltas[deltas.length - 1][1] : 0;
  if (total <= 0) return null;
  const rank = q * total;
  let prevLe = 0;
  let prevN = 0;
  for (const [le, n] of deltas) {
    if (n >= rank) {
      if (le === Infinity) return prevLe;
      return prevLe + ((le - prevLe) * (rank - prevN)) / Math.max(n - prevN, 1e-9);
    }
    prevLe = le;
    prevN = n;
  }
  return prevLe;
}

export class ClusterView {
  constructor(root) {
    this.root = root;
    this.tbody = root.querySelector('#members tbody');
    this.select = root.querySelector('#metrics-member');
    this.summary = document.getElementById('summary');
    this.metricsBase = '';
    this.samples = null;
    this.previous = null;
    this.plots = [];
    this.timer = null;
    this.select.addEventListener('change', () => {
      this.metricsBase = this.select.value;
      this.resetSamples();
    });
    this.resetSamples();
    // Poll in the background whichever view is shown: the plots need
    // continuous samples.
    this.tick();
  }

  resetSamples() {
    this.samples = [[], ...PLOTS.map(() => [])];
    this.previous = null;
    for (const p of this.plots) p.plot.setData([[], []]);
  }

  async tick() {
    // Both finish (or time out) before the next poll is scheduled.
    const results = await Promise.allSettled([this.refreshMembers(), this.sampleMetrics()]);
    for (const r of results) if (r.status === 'rejected') console.warn('cluster view', r.reason);
    this.timer = setTimeout(() => this.tick(), POLL_MS);
  }

  async refreshMembers() {
    let list;
    let self;
    try {
      [list, self] = await Promise.all([
        call('cluster/member/list', {}, { timeoutMs: STATUS_TIMEOUT_MS * 2 }),
        call('maintenance/status', {}, { timeoutMs: STATUS_TIMEOUT_MS * 2 }),
      ]);
    } catch (e) {
      this.summary.textContent = `member unreachable: ${e.message}`;
      this.summary.className = 'bad';
      return;
    }
    // Alarms may need a user; the cluster view never asks for a login.
    const alarms = await call('maintenance/alarm', { action: 'GET' }, { timeoutMs: STATUS_TIMEOUT_MS * 2, login: false }).catch(() => ({
      alarms: [],
    }));
    const selfId = self.header.member_id;
    const members = list.members || [];
    const statuses = await Promise.all(
      members.map((m) => {
        if (m.ID === selfId) return self;
        const url = (m.clientURLs || [])[0];
        if (!url) return { error: 'not started' };
        return call('maintenance/status', {}, { base: url, timeoutMs: STATUS_TIMEOUT_MS }).catch((e) => ({
          error: e.message,
        }));
      }),
    );
    const leader = self.leader;
    const leaderMember = members.find((m) => m.ID === leader);
    this.summary.className = leader && leader !== '0' ? '' : 'bad';
    this.summary.textContent =
      `cluster ${hexId(self.header.cluster_id)} · ${members.length} members · ` +
      `leader ${leaderMember ? leaderMember.name || hexId(leader) : 'none'} · ` +
      `revision ${self.header.revision || 0} · term ${self.raftTerm || 0}`;
    this.renderMembers(members, statuses, leader, selfId, alarms.alarms || []);
    this.renderMetricsChoice(members, selfId);
  }

  renderMembers(members, statuses, leader, selfId, alarms) {
    const rows = members.map((m, i) => {
      const st = statuses[i] || {};
      const isLeader = m.ID === leader;
      const role = st.error
        ? el('span', { class: 'badge badge-down' }, 'unreachable')
        : isLeader
          ? el('span', { class: 'badge badge-leader' }, 'leader')
          : m.isLearner
            ? el('span', { class: 'badge badge-learner' }, 'learner')
            : el('span', { class: 'badge' }, 'follower');
      const own = alarms.filter((a) => a.memberID === m.ID).map((a) => a.alarm || 'NONE');
      const errs = st.errors || [];
      return el(
        'tr',
        { dataset: { member: m.name || hexId(m.ID), id: hexId(m.ID) }, class: isLeader ? 'leader' : '' },
        el('td', {}, m.name || '(unstarted)', m.ID === selfId ? el('span', { class: 'hint' }, ' (this member)') : null),
        el('td', { class: 'mono' }, hexId(m.ID)),
        el('td', { class: 'role' }, role, st.error ? el('div', { class: 'hint' }, st.error) : null),
        el('td', { class: 'mono' }, (m.clientURLs || []).join(', ')),
        el('td', { class: 'mono' }, (m.peerURLs || []).join(', ')),
        el('td', { class: 'num' }, st.raftTerm || (st.error ? '' : '0')),
        el('td', { class: 'num' }, st.raftIndex || (st.error ? '' : '0')),
        el('td', { class: 'num' }, st.raftAppliedIndex || (st.error ? '' : '0')),
        el('td', { class: 'num' }, st.error ? '' : fmtSize(st.dbSize)),
        el('td', { class: 'num' }, st.error ? '' : fmtSize(st.dbSizeInUse)),
        el('td', {}, st.version || ''),
        el('td', { class: own.length || errs.length ? 'bad' : '' }, [...own, ...errs].join(', ') || 'none'),
      );
    });
    this.tbody.replaceChildren(...rows);
  }

  renderMetricsChoice(members, selfId) {
    const options = members
      .filter((m) => (m.clientURLs || []).length)
      .map((m) => [m.ID === selfId ? '' : m.clientURLs[0], m.name || hexId(m.ID)]);
    const key = JSON.stringify(options);
    if (key === this.choiceKey) return;
    this.choiceKey = key;
    this.select.replaceChildren(
      ...options.map(([value, name]) => el('option', { value, selected: value === this.metricsBase }, name)),
    );
  }

  async sampleMetrics() {
    const base = this.metricsBase;
    const r = await fetch(base + '/metrics', { signal: AbortSignal.timeout(STATUS_TIMEOUT_MS) });
    if (!r.ok) return;
    const text = await r.text();
    // The member was switched meanwhile: this sample is another member's.
    if (base !== this.metricsBase) return;
    const now = { t: performance.now() / 1000, wall: Date.now() / 1000, ...parseMetrics(text) };
    const prev = this.previous;
    this.previous = now;
    if (!prev) return;
    const dt = Math.max(now.t - prev.t, 1e-3);
    const values = PLOTS.map((p) => {
      if (p.counter) {
        const a = prev.counters.get(p.counter);
        const b = now.counters.get(p.counter);
        return a === undefined || b === undefined ? null : Math.max(b - a, 0) / dt;
      }
      const q = quantile(0.99, prev.buckets.get(p.histogram), now.buckets.get(p.histogram));
      return q === null ? null : q * 1000;
    });
    this.samples[0].push(now.wall);
    values.forEach((v, i) => this.samples[i + 1].push(v));
    while (this.samples[0].length && this.samples[0][0] < now.wall - KEEP_SECONDS) {
      for (const s of this.samples) s.shift();
    }
    this.draw();
  }

  draw() {
    if (typeof uPlot === 'undefined') return;
    const host = this.root.querySelector('#plots');
    if (!this.plots.length) {
      for (const p of PLOTS) {
        const box = el('div', { class: 'plot', id: 'plot-' + p.id });
        host.append(box);
        const plot = new uPlot(
          {
            title: p.title,
            width: 420,
            height: 180,
            scales: { y: { range: (u, min, max) => [0, Math.max(max * 1.1, 1)] } },
            series: [{}, { label: p.title, stroke: '#2563eb', fill: 'rgba(37,99,235,0.12)', width: 1.5, spanGaps: false }],
            axes: [{}, { size: 50 }],
            legend: { show: true },
          },
          [[], []],
          box,
        );
        this.plots.push({ p, plot, box });
      }
    }
    this.plots.forEach(({ plot }, i) => plot.setData([this.samples[0], this.samples[i + 1]]));
  }

  /** The latest value of each plot (for tests and the summary). */
  latest() {
    return Object.fromEntries(PLOTS.map((p, i) => [p.id, this.samples[i + 1].at(-1) ?? null]));
  }
}
