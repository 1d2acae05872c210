/*
 * agentmesh dashboard: a single-page view of the mesh and of each negotiation.
 *
 * No build step and no dependencies. Routes (hash based):
 *   #/              mesh overview: workers by role, live and ended sessions, start form
 *   #/session/<id>  one session: timeline, progress, proposals and diffs, verdicts,
 *                   sign-offs, outcome, the transcript
 *
 * Live updates come only from Server-Sent Events (`/api/events` for the mesh,
 * `/api/sessions/<id>/events` for a session); nothing polls.
 *
 * Every piece of text that comes from the coordinator or from a model (tasks, entry
 * content, concerns, reasons, roles, ids) goes into the page as a text node. The only
 * markup is the one built here with createElement.
 */
(function () {
  'use strict';

  const PHASES = ['FRAMING', 'CONTRIBUTE', 'SYNTHESIZE', 'REVIEW'];
  // COMPLETED ends broadcast (benchmark) sessions, which negotiate nothing.
  const TERMINAL = ['CONSENSUS', 'NO_CONSENSUS', 'CANCELLED', 'FAILED', 'COMPLETED'];
  const SPECIALISTS = ['backend', 'frontend', 'security', 'architect', 'devops', 'database'];
  const ROLE_ORDER = ['supervisor'].concat(SPECIALISTS);
  const ROLE_HUES = {
    supervisor: 262, backend: 217, frontend: 174, security: 355,
    architect: 32, devops: 142, database: 199,
  };
  const STATUS_LABELS = {
    PENDING: 'Pending', FRAMING: 'Framing', CONTRIBUTE: 'Contribute', SYNTHESIZE: 'Synthesize',
    REVIEW: 'Review', CONSENSUS: 'Consensus', NO_CONSENSUS: 'No consensus',
    CANCELLED: 'Cancelled', FAILED: 'Failed', COMPLETED: 'Completed',
  };
  const COLLAPSE_LINES = 14;
  const DIFF_CONTEXT = 3;

  // ---------------------------------------------------------------- DOM helpers

  /** Builds an element. Children that are not nodes become text nodes. */
  function h(tag, props) {
    const el = document.createElement(tag);
    if (props) {
      for (const key of Object.keys(props)) {
        const value = props[key];
        if (value === null || value === undefined || value === false) continue;
        if (key === 'class') el.className = value;
        else if (key === 'text') el.textContent = String(value);
        else if (key === 'dataset') {
          for (const d of Object.keys(value)) {
            if (value[d] !== null && value[d] !== undefined) el.dataset[d] = String(value[d]);
          }
        } else if (key === 'style') {
          for (const s of Object.keys(value)) el.style.setProperty(s, String(value[s]));
        } else if (key.slice(0, 2) === 'on') el.addEventListener(key.slice(2), value);
        else el.setAttribute(key, value === true ? '' : String(value));
      }
    }
    for (let i = 2; i < arguments.length; i++) add(el, arguments[i]);
    return el;
  }

  function add(el, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) {
      for (const c of child) add(el, c);
    } else if (child instanceof Node) {
      el.appendChild(child);
    } else {
      el.appendChild(document.createTextNode(String(child)));
    }
  }

  function fill(el) {
    el.replaceChildren();
    for (let i = 1; i < arguments.length; i++) add(el, arguments[i]);
    return el;
  }

  const byId = (id) => document.getElementById(id);
  const enc = encodeURIComponent;
  const isTerminal = (status) => TERMINAL.indexOf(status) >= 0;
  const plural = (n, one, many) => n + ' ' + (n === 1 ? one : (many || one + 's'));
  const shortHash = (hash) => (hash ? String(hash).slice(0, 12) : '');
  const num = (n) => Number(n || 0).toLocaleString('en-US');

  function hueOf(role) {
    const r = String(role || '');
    if (Object.prototype.hasOwnProperty.call(ROLE_HUES, r)) return ROLE_HUES[r];
    let hash = 0;
    for (let i = 0; i < r.length; i++) hash = (hash * 31 + r.charCodeAt(i)) >>> 0;
    return hash % 360;
  }

  function roleRank(role) {
    const i = ROLE_ORDER.indexOf(role);
    return i < 0 ? ROLE_ORDER.length : i;
  }

  function sortRoles(roles) {
    return roles.slice().sort((a, b) => roleRank(a) - roleRank(b) || String(a).localeCompare(String(b)));
  }

  function roleChip(role, extra) {
    return h('span', { class: 'role-chip' + (extra ? ' ' + extra : ''), style: { '--hue': hueOf(role) }, dataset: { role: role } }, role);
  }

  function statusBadge(status, id) {
    return h('span', { id: id || null, class: 'badge status status-' + String(status || '').toLowerCase(), dataset: { status: status } },
      STATUS_LABELS[status] || String(status || 'UNKNOWN'));
  }

  function typeBadge(type) {
    return h('span', { class: 'badge type type-' + String(type || '').toLowerCase() }, String(type || ''));
  }

  function verdictBadge(verdict) {
    if (!verdict) return null;
    return h('span', { class: 'badge verdict verdict-' + String(verdict).toLowerCase(), dataset: { verdict: verdict } }, String(verdict));
  }

  function entryTime(e) {
    const ms = e.timestamp_ms || Date.parse(e.timestamp);
    return Number.isFinite(ms) ? ms : 0;
  }

  function fmtClock(ms) {
    if (!ms) return '';
    return new Date(ms).toLocaleTimeString('en-GB', { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  }

  function fmtDateTime(ms) {
    if (!ms) return '';
    const d = new Date(ms);
    return d.toLocaleDateString('en-CA') + ' ' + fmtClock(ms);
  }

  function fmtDuration(ms) {
    if (!(ms > 0)) return '\u2014';
    const sec = ms / 1000;
    if (sec < 60) return sec.toFixed(sec < 10 ? 1 : 0) + ' s';
    const min = Math.floor(sec / 60);
    if (min < 60) return min + ' min ' + Math.round(sec - 60 * min) + ' s';
    return Math.floor(min / 60) + ' h ' + (min % 60) + ' min';
  }

  function roundText(s) {
    if (!s) return '';
    return 'Round ' + (s.round || 0) + ' / ' + (s.max_rounds || '?');
  }

  // ----------------------------------------------------------------- networking

  class ApiError extends Error {
    constructor(status, message, leader) {
      super(message);
      this.status = status;
      this.leader = leader || null;
    }
  }

  async function api(method, path, body) {
    const init = { method: method, headers: { Accept: 'application/json' } };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, 'The coordinator cannot be reached (' + e.message + ').');
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (_) { data = null; }
    }
    // Signed out (or the token was revoked): back to the login page.
    if (res.status === 401) {
      location.assign('/login');
    }
    if (!res.ok) {
      const message = (data && typeof data.error === 'string' && data.error) || (res.status + ' ' + res.statusText);
      const err = new ApiError(res.status, message, data && data.leader);
      if (res.status === 503) showStandby(err);
      throw err;
    }
    return data;
  }

  /** Opens an EventSource whose handlers get parsed JSON. */
  function stream(url, handlers, onState) {
    const es = new EventSource(url);
    onState('connecting');
    es.onopen = () => onState('live');
    es.onerror = () => onState(es.readyState === EventSource.CLOSED ? 'offline' : 'connecting');
    for (const name of Object.keys(handlers)) {
      es.addEventListener(name, (ev) => {
        let data;
        try {
          data = JSON.parse(ev.data);
        } catch (e) {
          console.warn('agentmesh: unreadable ' + name + ' event', e);
          return;
        }
        handlers[name](data, ev);
      });
    }
    return es;
  }

  const CONN_TEXT = { idle: 'idle', connecting: 'connecting…', live: 'live', ended: 'ended', offline: 'disconnected' };

  function setConn(state) {
    const el = byId('conn');
    if (!el) return;
    el.dataset.state = state;
    el.textContent = CONN_TEXT[state] || state;
  }

  function showBanner(kind, children) {
    const el = byId('banner');
    el.className = 'banner banner-' + kind;
    fill(el, children);
    el.hidden = false;
  }

  function hideBanner() {
    const el = byId('banner');
    el.hidden = true;
    el.replaceChildren();
  }

  /** A standby coordinator names the leader: link to it when it is a plain http(s) URL. */
  function showStandby(err) {
    let link = null;
    if (err.leader) {
      try {
        const url = new URL(String(err.leader));
        if (url.protocol === 'http:' || url.protocol === 'https:') {
          link = h('a', { href: url.href }, url.href);
        }
      } catch (_) { link = null; }
    }
    showBanner('warn', [
      h('strong', null, 'This coordinator is a standby. '),
      err.message + ' ',
      link ? ['The leader is at ', link, '.'] : null,
    ]);
  }

  // ---------------------------------------------------------------- line diff

  /**
   * Line diff by longest common subsequence. Returns [{kind: 'same'|'add'|'del', text,
   * a, b}] where a/b are 1-based line numbers in the old/new text (0 when absent).
   */
  function diffLines(a, b) {
    const out = [];
    let start = 0;
    while (start < a.length && start < b.length && a[start] === b[start]) {
      out.push({ kind: 'same', text: a[start], a: start + 1, b: start + 1 });
      start++;
    }
    let endA = a.length;
    let endB = b.length;
    while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) { endA--; endB--; }
    const n = endA - start;
    const m = endB - start;
    const middle = [];
    if (n * m > 4000000) {
      for (let i = 0; i < n; i++) middle.push({ kind: 'del', text: a[start + i], a: start + i + 1, b: 0 });
      for (let j = 0; j < m; j++) middle.push({ kind: 'add', text: b[start + j], a: 0, b: start + j + 1 });
    } else {
      const w = m + 1;
      const dp = new Uint32Array((n + 1) * w);
      for (let i = n - 1; i >= 0; i--) {
        for (let j = m - 1; j >= 0; j--) {
          dp[i * w + j] = a[start + i] === b[start + j]
            ? dp[(i + 1) * w + j + 1] + 1
            : Math.max(dp[(i + 1) * w + j], dp[i * w + j + 1]);
        }
      }
      let i = 0;
      let j = 0;
      while (i < n && j < m) {
        if (a[start + i] === b[start + j]) {
          middle.push({ kind: 'same', text: a[start + i], a: start + i + 1, b: start + j + 1 });
          i++; j++;
        } else if (dp[(i + 1) * w + j] >= dp[i * w + j + 1]) {
          middle.push({ kind: 'del', text: a[start + i], a: start + i + 1, b: 0 });
          i++;
        } else {
          middle.push({ kind: 'add', text: b[start + j], a: 0, b: start + j + 1 });
          j++;
        }
      }
      for (; i < n; i++) middle.push({ kind: 'del', text: a[start + i], a: start + i + 1, b: 0 });
      for (; j < m; j++) middle.push({ kind: 'add', text: b[start + j], a: 0, b: start + j + 1 });
    }
    for (const d of middle) out.push(d);
    for (let k = 0; endA + k < a.length; k++) {
      out.push({ kind: 'same', text: a[endA + k], a: endA + k + 1, b: endB + k + 1 });
    }
    return out;
  }

  const splitLines = (text) => String(text || '').replace(/\r\n/g, '\n').split('\n');

  function diffRow(d) {
    const sign = d.kind === 'add' ? '+' : d.kind === 'del' ? '\u2212' : ' ';
    return h('div', { class: 'diff-line ' + d.kind, dataset: { kind: d.kind } },
      h('span', { class: 'ln' }, d.a ? String(d.a) : ''),
      h('span', { class: 'ln' }, d.b ? String(d.b) : ''),
      h('span', { class: 'sign' }, sign),
      h('span', { class: 'code' }, d.text === '' ? '\u00a0' : d.text));
  }

  /** Renders a diff, folding long unchanged runs into an expandable marker. */
  function renderDiff(container, rows) {
    let i = 0;
    while (i < rows.length) {
      if (rows[i].kind !== 'same') {
        container.appendChild(diffRow(rows[i]));
        i++;
        continue;
      }
      let j = i;
      while (j < rows.length && rows[j].kind === 'same') j++;
      const run = rows.slice(i, j);
      const head = i === 0 ? 0 : DIFF_CONTEXT;
      const tail = j === rows.length ? 0 : DIFF_CONTEXT;
      if (run.length > head + tail + 1) {
        for (const r of run.slice(0, head)) container.appendChild(diffRow(r));
        const hidden = run.slice(head, run.length - tail);
        const skip = h('button', { type: 'button', class: 'diff-skip' },
          '\u22ef ' + plural(hidden.length, 'unchanged line') + ' \u2014 show');
        skip.addEventListener('click', () => {
          const frag = document.createDocumentFragment();
          for (const r of hidden) frag.appendChild(diffRow(r));
          skip.replaceWith(frag);
        });
        container.appendChild(skip);
        for (const r of run.slice(run.length - tail)) container.appendChild(diffRow(r));
      } else {
        for (const r of run) container.appendChild(diffRow(r));
      }
      i = j;
    }
  }

  // ------------------------------------------------------------------- router

  let view = null;

  function route() {
    if (view && view.dispose) view.dispose();
    view = null;
    hideBanner();
    setConn('idle');
    const app = byId('app');
    app.replaceChildren();
    const m = /^#\/session\/([^/?#]+)/.exec(location.hash || '');
    if (m) {
      let id;
      try { id = decodeURIComponent(m[1]); } catch (_) { id = m[1]; }
      view = sessionView(app, id);
    } else {
      view = overviewView(app);
    }
    window.scrollTo(0, 0);
  }

  // ------------------------------------------------------------ mesh overview

  function overviewView(root) {
    document.title = 'agentmesh \u2014 mesh overview';
    const st = { workers: new Map(), sessions: new Map(), ready: false, queue: [], es: null, timer: 0, refresh: 0, disposed: false };

    const statsEl = h('div', { class: 'stats', id: 'mesh-stats' });
    const workersEl = h('div', { id: 'workers', class: 'role-groups' }, h('p', { class: 'muted' }, 'Loading workers\u2026'));
    const liveEl = h('div', { id: 'live-sessions', class: 'session-list' }, h('p', { class: 'muted' }, 'Loading sessions\u2026'));
    const endedEl = h('div', { id: 'ended-sessions', class: 'session-list' });
    const liveCount = h('span', { class: 'count', id: 'live-count' });
    const endedCount = h('span', { class: 'count', id: 'ended-count' });
    const workerCount = h('span', { class: 'count', id: 'worker-count' });

    add(root, [
      h('div', { class: 'page-head' },
        h('div', null,
          h('h1', null, 'Mesh overview'),
          h('p', { class: 'muted' }, 'Specialist agents negotiating designs until every participant signs the same proposal.'))),
      statsEl,
      h('div', { class: 'overview-grid' },
        h('div', { class: 'col' },
          h('section', { class: 'card', id: 'start-card' },
            h('div', { class: 'card-head' }, h('h2', null, 'Start a negotiation')),
            startForm()),
          h('section', { class: 'card' },
            h('div', { class: 'card-head' }, h('h2', null, 'Live sessions'), liveCount),
            liveEl),
          h('section', { class: 'card' },
            h('div', { class: 'card-head' }, h('h2', null, 'Recent sessions'), endedCount),
            endedEl)),
        h('div', { class: 'col' },
          h('section', { class: 'card', id: 'workers-card' },
            h('div', { class: 'card-head' }, h('h2', null, 'Workers'), workerCount),
            workersEl))),
    ]);

    function upsertSession(s) {
      if (!s || !s.id) return;
      const cur = st.sessions.get(s.id);
      if (cur && (cur.updated_ms || 0) > (s.updated_ms || 0)) return;
      if (cur && isTerminal(cur.status) && !isTerminal(s.status)) return;
      st.sessions.set(s.id, s);
    }

    function setWorkers(list) {
      st.workers = new Map();
      for (const w of list || []) st.workers.set(w.worker_id, w);
    }

    function apply(name, data) {
      switch (name) {
        case 'session_created':
        case 'phase':
          upsertSession(data.session);
          if (name === 'session_created') refreshWorkers();
          break;
        case 'session_ended':
          upsertSession(data.session);
          refreshWorkers();
          break;
        case 'worker_joined':
          if (data && data.worker_id) st.workers.set(data.worker_id, data);
          break;
        case 'worker_left':
          if (data) st.workers.delete(data.worker_id);
          break;
        case 'resync':
          st.sessions = new Map();
          for (const s of data.sessions || []) st.sessions.set(s.id, s);
          setWorkers(data.workers);
          break;
        default:
          break;
      }
    }

    /** Worker load changes with sessions; re-read the worker list when one starts or ends. */
    function refreshWorkers() {
      if (st.refresh) return;
      st.refresh = setTimeout(async () => {
        st.refresh = 0;
        try {
          const workers = await api('GET', '/api/workers');
          if (!st.disposed) { setWorkers(workers); schedule(); }
        } catch (_) { /* the next event retries */ }
      }, 250);
    }

    function schedule() {
      if (st.timer || st.disposed) return;
      st.timer = setTimeout(() => { st.timer = 0; if (!st.disposed) render(); }, 30);
    }

    const handlers = {};
    for (const name of ['session_created', 'session_ended', 'phase', 'worker_joined', 'worker_left', 'resync']) {
      handlers[name] = (data) => {
        if (!st.ready) { st.queue.push([name, data]); return; }
        apply(name, data);
        schedule();
      };
    }
    st.es = stream('/api/events', handlers, setConn);

    Promise.all([api('GET', '/api/workers'), api('GET', '/api/sessions')]).then(([workers, sessions]) => {
      if (st.disposed) return;
      setWorkers(workers);
      for (const s of sessions || []) upsertSession(s);
      st.ready = true;
      for (const [name, data] of st.queue) apply(name, data);
      st.queue = [];
      render();
    }).catch((err) => {
      if (st.disposed) return;
      if (err.status !== 503) showBanner('error', ['Could not load the mesh: ', err.message]);
      fill(workersEl, h('p', { class: 'muted' }, 'Unavailable.'));
      fill(liveEl, h('p', { class: 'muted' }, 'Unavailable.'));
    });

    function render() {
      const sessions = Array.from(st.sessions.values()).sort((a, b) => (b.created_ms || 0) - (a.created_ms || 0));
      const live = sessions.filter((s) => !isTerminal(s.status));
      const ended = sessions.filter((s) => isTerminal(s.status));
      const workers = Array.from(st.workers.values());
      const consensus = ended.filter((s) => s.status === 'CONSENSUS').length;
      const roles = new Set(workers.map((w) => w.role));
      const load = workers.reduce((n, w) => n + (w.load || 0), 0);
      const capacity = workers.reduce((n, w) => n + (w.capacity || 0), 0);

      fill(statsEl,
        stat('stat-workers', String(workers.length), 'workers', plural(roles.size, 'role')),
        stat('stat-load', load + ' / ' + capacity, 'turn slots in use', capacity ? Math.round(100 * load / capacity) + '% load' : 'no capacity'),
        stat('stat-live', String(live.length), 'live sessions', live.length ? 'negotiating now' : 'idle'),
        stat('stat-ended', String(ended.length), 'ended sessions', ended.length ? consensus + ' reached consensus' : '\u2014'));

      workerCount.textContent = String(workers.length);
      liveCount.textContent = String(live.length);
      endedCount.textContent = String(ended.length);
      renderWorkers(workers);
      fill(liveEl, live.length ? live.map(sessionRow)
        : h('p', { class: 'empty' }, 'No session is running. Start one above.'));
      const shown = ended.slice(0, 25);
      fill(endedEl, shown.length ? shown.map(sessionRow) : h('p', { class: 'empty' }, 'No session has ended yet.'),
        ended.length > shown.length ? h('p', { class: 'muted small' }, plural(ended.length - shown.length, 'older session') + ' not shown.') : null);
    }

    function stat(id, value, label, sub) {
      return h('div', { class: 'stat', id: id },
        h('div', { class: 'stat-value' }, value),
        h('div', { class: 'stat-label' }, label),
        h('div', { class: 'stat-sub' }, sub));
    }

    function renderWorkers(workers) {
      if (!workers.length) {
        fill(workersEl, h('p', { class: 'empty' }, 'No worker is connected. Start one with ',
          h('code', null, 'mesh-worker --role backend'), '.'));
        return;
      }
      const groups = new Map();
      for (const w of workers) {
        if (!groups.has(w.role)) groups.set(w.role, []);
        groups.get(w.role).push(w);
      }
      fill(workersEl, sortRoles(Array.from(groups.keys())).map((role) => {
        const list = groups.get(role).sort((a, b) => String(a.worker_id).localeCompare(String(b.worker_id)));
        const load = list.reduce((n, w) => n + (w.load || 0), 0);
        const cap = list.reduce((n, w) => n + (w.capacity || 0), 0);
        return h('div', { class: 'role-group', dataset: { role: role } },
          h('div', { class: 'role-group-head' }, roleChip(role),
            h('span', { class: 'muted small' }, plural(list.length, 'worker') + ' \u00b7 ' + load + '/' + cap + ' busy')),
          list.map(workerRow));
      }));
    }

    function workerRow(w) {
      const cap = Math.max(0, w.capacity || 0);
      const load = Math.max(0, w.load || 0);
      const pct = cap ? Math.min(100, Math.round((100 * load) / cap)) : 0;
      const flags = [];
      if (w.connected === false) flags.push(h('span', { class: 'pill pill-bad' }, 'disconnected'));
      if (w.draining) flags.push(h('span', { class: 'pill pill-warn' }, 'draining'));
      if (w.leased === false) flags.push(h('span', { class: 'pill pill-warn', title: 'no registry lease' }, 'no lease'));
      return h('div', { class: 'worker', dataset: { workerId: w.worker_id, role: w.role } },
        h('div', { class: 'worker-line' },
          h('span', { class: 'worker-id mono' }, w.worker_id),
          flags,
          h('span', { class: 'worker-meta muted small', title: w.address || '' },
            plural(w.turns_completed || 0, 'turn') + (w.version ? ' \u00b7 v' + w.version : ''))),
        h('div', { class: 'bar', title: load + ' of ' + cap + ' sessions', role: 'meter', 'aria-valuemin': 0, 'aria-valuemax': cap, 'aria-valuenow': load },
          h('div', { class: 'bar-fill' + (pct >= 100 ? ' full' : ''), style: { width: pct + '%' } })),
        h('div', { class: 'bar-label small muted' }, load + ' / ' + cap));
    }

    function sessionRow(s) {
      const steps = !isTerminal(s.status)
        ? h('span', { class: 'mini-phases', title: s.status },
          PHASES.map((p) => h('span', { class: 'mini-phase' + (p === s.status ? ' on' : ''), title: p })))
        : null;
      return h('a', { class: 'session-row', href: '#/session/' + enc(s.id), dataset: { sessionId: s.id, status: s.status } },
        h('div', { class: 'session-row-main' },
          h('span', { class: 'session-task' }, s.task),
          h('span', { class: 'session-sub muted small' },
            h('span', { class: 'mono' }, s.id), ' \u00b7 ', plural((s.roles || []).length, 'role'),
            ' \u00b7 ', fmtDateTime(s.created_ms),
            isTerminal(s.status) && s.reason ? [' \u00b7 ', s.reason] : null)),
        h('div', { class: 'session-row-side' },
          statusBadge(s.status), steps,
          h('span', { class: 'muted small' }, roundText(s))));
    }

    return {
      dispose() {
        st.disposed = true;
        if (st.es) st.es.close();
        clearTimeout(st.timer);
        clearTimeout(st.refresh);
      },
    };
  }

  function startForm() {
    const task = h('textarea', { id: 'task', name: 'task', rows: 4, required: true, placeholder: 'Design an order-tracking service for a multi-tenant SaaS\u2026' });
    const roles = h('input', { id: 'roles', name: 'roles', type: 'text', value: SPECIALISTS.join(','), autocomplete: 'off', spellcheck: 'false' });
    const rounds = h('input', { id: 'max-rounds', name: 'max_rounds', type: 'number', min: 1, max: 50, step: 1, placeholder: 'default' });
    const error = h('p', { id: 'start-error', class: 'form-error', role: 'alert', hidden: true });
    const submit = h('button', { id: 'start-submit', type: 'submit', class: 'btn btn-primary' }, 'Start session');
    const form = h('form', { id: 'start-form', class: 'form', novalidate: true },
      h('label', { for: 'task' }, 'Task'),
      task,
      h('div', { class: 'form-row' },
        h('div', { class: 'field grow' },
          h('label', { for: 'roles' }, 'Specialist roles ', h('span', { class: 'muted small' }, '(comma separated; the supervisor always takes part)')),
          roles),
        h('div', { class: 'field' }, h('label', { for: 'max-rounds' }, 'Max rounds'), rounds)),
      error,
      h('div', { class: 'form-actions' }, submit));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      error.hidden = true;
      const body = { task: task.value.trim() };
      if (!body.task) {
        error.textContent = 'Describe the task to negotiate.';
        error.hidden = false;
        task.focus();
        return;
      }
      const list = roles.value.split(/[\s,]+/).map((r) => r.trim()).filter(Boolean);
      if (list.length) body.roles = list;
      const n = parseInt(rounds.value, 10);
      if (Number.isFinite(n) && n > 0) body.max_rounds = n;
      submit.disabled = true;
      submit.textContent = 'Starting\u2026';
      try {
        const s = await api('POST', '/api/sessions', body);
        location.hash = '#/session/' + enc(s.id);
      } catch (err) {
        error.textContent = err.message;
        error.hidden = false;
        submit.disabled = false;
        submit.textContent = 'Start session';
      }
    });
    // A caller who may only read sees why it cannot start one (the coordinator refuses
    // it with 403 either way).
    api('GET', '/api/whoami').then((me) => {
      if (me && me.can_write === false) {
        submit.disabled = true;
        error.textContent = 'Signed in as ' + me.name + ', who may read but not start sessions (needs sessions:write).';
        error.hidden = false;
      }
    }, () => {});
    return form;
  }

  // ------------------------------------------------------------- session view

  function phaseKey(round, phase) {
    return (round || 0) * 4 + Math.max(0, PHASES.indexOf(phase));
  }

  // ---- Sign-offs verified in this browser (docs/verification.md) ----------------------
  // A sign-off is marked verified only after this page checked it itself, with WebCrypto:
  // the transcript's hash chain up to it and its worker's Ed25519 signature over its
  // statement; the certificate likewise. Nothing the coordinator says counts as a check.
  // Where WebCrypto has no Ed25519 (an old browser, or a page outside a secure context:
  // https or localhost), the marks say so: `meshctl verify` checks the export instead.
  const Verify = (function () {
    const te = new TextEncoder();
    const subtle = (window.crypto && window.crypto.subtle) || null;
    function cat(parts) {
      const n = parts.reduce((a, p) => a + p.length, 0);
      const out = new Uint8Array(n);
      let at = 0;
      for (const p of parts) { out.set(p, at); at += p.length; }
      return out;
    }
    function u32(n) { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, n >>> 0); return b; }
    function u64(n) { const b = new Uint8Array(8); new DataView(b.buffer).setBigUint64(0, BigInt(n)); return b; }
    function i64(n) { const b = new Uint8Array(8); new DataView(b.buffer).setBigInt64(0, BigInt(n)); return b; }
    function bytes(b) { return cat([u32(b.length), b]); }
    function str(x) { return bytes(te.encode(x || '')); }
    function list(xs) { return cat([u32((xs || []).length)].concat((xs || []).map(str))); }
    function unhex(x) {
      if (typeof x !== 'string' || x.length % 2 || /[^0-9a-f]/i.test(x)) throw new Error('not hex');
      const out = new Uint8Array(x.length / 2);
      for (let i = 0; i < out.length; i++) out[i] = parseInt(x.substr(2 * i, 2), 16);
      return out;
    }
    function tohex(b) { return Array.from(b, (v) => v.toString(16).padStart(2, '0')).join(''); }
    async function sha(b) { return new Uint8Array(await subtle.digest('SHA-256', b)); }
    async function verifies(key, sig, message) {
      const k = await subtle.importKey('raw', key, { name: 'Ed25519' }, false, ['verify']);
      return subtle.verify({ name: 'Ed25519' }, k, sig, message);
    }
    function statement(sid, round, phase, role, attempt, type, contentSha, verdict, concerns, reviewed) {
      return cat([str('agentmesh.v1.result'), str(sid), u32(round), str(phase), str(role), u32(attempt),
        str(type), contentSha, str(verdict || ''), list(concerns), str(reviewed)]);
    }
    let supported = null;
    async function available() {
      if (supported !== null) return supported;
      if (!subtle) { supported = false; return false; }
      try {
        await subtle.importKey('raw', new Uint8Array(32).fill(1), { name: 'Ed25519' }, false, ['verify']);
        supported = true;
      } catch (_) {
        supported = false;
      }
      return supported;
    }
    // seq -> {ok, why} for every entry, in order; after the first break every later
    // entry carries it. And the certificate's verdict.
    async function check(session, entries) {
      const results = new Map();
      if (!(await available())) {
        const why = subtle ? 'this browser has no Ed25519 in WebCrypto' : 'no WebCrypto here (use https, or meshctl verify)';
        for (const e of entries) results.set(e.seq, { ok: false, why: why, unsupported: true });
        return { entries: results, certificate: { ok: false, why: why, unsupported: true } };
      }
      let prev = await sha(cat([str('agentmesh.v1.genesis'), str(session.id), await sha(te.encode(session.task || ''))]));
      let broken = null;
      for (let i = 0; i < entries.length; i++) {
        const e = entries[i];
        if (broken) { results.set(e.seq, { ok: false, why: broken }); continue; }
        try {
          if (e.seq !== i + 1) throw new Error('seq ' + (i + 1) + ' is missing or out of order');
          const contentSha = await sha(te.encode(e.content || ''));
          if (!e.public_key || !e.signature) throw new Error('seq ' + e.seq + ' is not signed');
          const key = unhex(e.public_key);
          const sig = unhex(e.signature);
          const reviewed = e.phase === 'REVIEW' ? e.proposal_hash : '';
          const msg = statement(session.id, e.round, e.phase, e.role, e.attempt || 0, e.type, contentSha, e.verdict, e.concerns, reviewed);
          if (!(await verifies(key, sig, msg))) throw new Error('seq ' + e.seq + ' signature does not verify');
          const eb = cat([str('agentmesh.v1.entry'), u64(e.seq), u32(e.round), str(e.phase), str(e.role), str(e.worker_id),
            u32(e.attempt || 0), str(e.type), i64(e.timestamp_ms), contentSha, str(e.verdict || ''), list(e.concerns),
            str(e.proposal_hash), u32(e.proposal_version || 0), u64(e.prompt_tokens || 0), u64(e.completion_tokens || 0),
            bytes(key), bytes(sig)]);
          const chain = await sha(cat([str('agentmesh.v1.chain'), prev, eb]));
          if (tohex(chain) !== e.chain_hash) throw new Error('seq ' + e.seq + ' chain hash does not follow');
          prev = chain;
          results.set(e.seq, { ok: true });
        } catch (err) {
          broken = err.message;
          results.set(e.seq, { ok: false, why: broken });
        }
      }
      return { entries: results, certificate: await checkCertificate(session, entries, results, tohex(prev), broken) };
    }
    async function checkCertificate(session, entries, results, head, broken) {
      const c = session.certificate;
      if (!c) return null;
      try {
        if (broken) throw new Error(broken);
        if (c.session_id !== session.id) throw new Error('it names another session');
        const roles = session.roles || [];
        if (JSON.stringify(c.participants) !== JSON.stringify(roles)) throw new Error('its participants are not the roles');
        if (c.final_hash !== session.final_hash) throw new Error('it names another final hash');
        const last = entries.length ? entries[entries.length - 1].seq : 0;
        if (c.chain_seq !== last || c.chain_head !== head) throw new Error('it is not bound to the chain head');
        const bySeq = new Map(entries.map((e) => [e.seq, e]));
        for (const r of roles) {
          const a = (c.approvals || []).filter((x) => x.role === r);
          if (a.length !== 1) throw new Error(r + ' has no approval in it');
          const e = bySeq.get(a[0].seq);
          if (!e || e.role !== r || e.verdict !== 'APPROVE' || e.proposal_hash !== c.final_hash
              || e.public_key !== a[0].public_key || e.signature !== a[0].signature || !(results.get(e.seq) || {}).ok) {
            throw new Error(r + "'s approval is not its verified entry");
          }
        }
        const parts = [str('agentmesh.v1.certificate'), str(c.session_id), unhex(c.task_sha256), list(c.participants),
          u32(c.final_version), str(c.final_hash), u64(c.chain_seq), unhex(c.chain_head), u32(c.approvals.length)];
        for (const a of c.approvals) {
          parts.push(str(a.role), str(a.worker_id), u64(a.seq), u32(a.round), u32(a.attempt), unhex(a.content_sha256),
            list(a.concerns), bytes(unhex(a.public_key)), bytes(unhex(a.signature)));
        }
        parts.push(bytes(c.coordinator_key ? unhex(c.coordinator_key) : new Uint8Array(0)));
        if (tohex(await sha(te.encode(session.task || ''))) !== c.task_sha256) throw new Error('it names another task');
        if (!c.coordinator_key || !(await verifies(unhex(c.coordinator_key), unhex(c.signature || ''), cat(parts)))) {
          throw new Error("the coordinator's signature does not verify");
        }
        return { ok: true, key: c.coordinator_key };
      } catch (err) {
        return { ok: false, why: err.message };
      }
    }
    return { check: check };
  })();

  function sessionView(root, id) {
    document.title = 'agentmesh \u2014 session ' + id;
    const st = {
      id: id, session: null, entries: [], bySeq: new Map(), progress: null,
      es: null, timer: 0, disposed: false, filter: 'all',
      version: null, followLatest: true, mode: 'diff', rendered: [], live: false,
      // What this page verified itself (Verify.check): seq -> {ok, why}, the certificate.
      checks: new Map(), certificate: null, checkedKey: '', checking: false,
    };
    add(root, h('p', { class: 'muted loading' }, 'Loading session\u2026'));

    const els = {};

    load();

    async function load() {
      let t;
      try {
        t = await api('GET', '/api/sessions/' + enc(id) + '/transcript');
      } catch (err) {
        if (st.disposed) return;
        fill(root, h('section', { class: 'card', id: 'session-error' },
          h('h1', null, err.status === 404 ? 'Session not found' : 'Could not load the session'),
          h('p', null, err.message),
          h('p', null, h('a', { href: '#/' }, '\u2190 Back to the mesh overview'))));
        return;
      }
      if (st.disposed) return;
      st.session = t.session;
      for (const e of t.entries || []) addEntry(e);
      layout();
      render();
      st.live = true;
      if (isTerminal(st.session.status)) {
        setConn('ended');
      } else {
        st.es = stream('/api/sessions/' + enc(id) + '/events', {
          entry: (e) => { addEntry(e); schedule(); },
          status: (d) => { onStatus(d); schedule(); },
          progress: (d) => { onProgress(d); schedule(); },
        }, (state) => setConn(state));
      }
    }

    function addEntry(e) {
      if (!e || typeof e.seq !== 'number' || st.bySeq.has(e.seq)) return;
      st.bySeq.set(e.seq, e);
      st.entries.push(e);
      if (st.entries.length > 1 && st.entries[st.entries.length - 2].seq > e.seq) {
        st.entries.sort((a, b) => a.seq - b.seq);
      }
    }

    function onStatus(d) {
      const cur = st.session;
      const snap = d.session && d.session.id ? d.session : null;
      const sameStep = cur && d.status === cur.status && d.round === cur.round;
      // The stream starts from the beginning; statuses older than what we hold are history.
      const stale = cur && ((snap && (snap.updated_ms || 0) < (cur.updated_ms || 0)) ||
        (isTerminal(cur.status) && !isTerminal(d.status)));
      if (!stale || sameStep) {
        if (!stale && snap) st.session = snap;
        else if (!stale) st.session = Object.assign({}, cur, { status: d.status, round: d.round, reason: d.reason || cur.reason });
        st.progress = { status: d.status, round: d.round, answered: [], awaiting: (d.awaiting || []).slice() };
      }
      if (isTerminal(d.status) && !stale) {
        st.progress = null;
        if (st.es) { st.es.close(); st.es = null; }
        setConn('ended');
        // The server ends the stream here; read the final summary once to be complete.
        api('GET', '/api/sessions/' + enc(st.id)).then((final) => {
          if (!st.disposed && final && final.id === st.id && isTerminal(final.status)) {
            st.session = final;
            schedule();
          }
        }).catch(() => {});
      }
    }

    function onProgress(d) {
      const s = st.session;
      if (!s || isTerminal(s.status) || isTerminal(d.status)) return;
      if (phaseKey(d.round, d.status) < phaseKey(s.round, s.status)) return;
      st.progress = { status: d.status, round: d.round, answered: (d.answered || []).slice(), awaiting: (d.awaiting || []).slice() };
    }

    function schedule() {
      if (st.timer || st.disposed) return;
      st.timer = setTimeout(() => { st.timer = 0; if (!st.disposed) render(); }, 30);
    }

    // ---- layout (built once), sections re-rendered on every change

    function layout() {
      root.replaceChildren();
      els.header = h('section', { class: 'card session-header', id: 'session-header' });
      els.outcome = h('section', { class: 'outcome', id: 'outcome' });
      els.timeline = h('div', { id: 'timeline', class: 'timeline' });
      els.progress = h('section', { class: 'card', id: 'progress' });
      els.signoffs = h('div', { id: 'signoffs', class: 'signoffs' });
      els.signoffHead = h('div', { class: 'card-head' });
      els.verdicts = h('div', { id: 'verdicts', class: 'verdicts' });
      els.proposals = h('div', { id: 'proposals' });
      els.filter = h('div', { id: 'role-filter', class: 'filters', role: 'toolbar', 'aria-label': 'Filter entries by role' });
      els.entries = h('div', { id: 'entries', class: 'entries' });
      els.entryCount = h('span', { class: 'count', id: 'entry-count' });
      add(root, [
        els.header,
        els.outcome,
        h('div', { class: 'session-grid' },
          h('div', { class: 'col main' },
            h('section', { class: 'card' },
              h('div', { class: 'card-head' }, h('h2', null, 'Rounds'), els.timelineNote = h('span', { class: 'muted small', id: 'timeline-note' })),
              els.timeline),
            h('section', { class: 'card', id: 'proposals-card' },
              h('div', { class: 'card-head' }, h('h2', null, 'Proposal versions')),
              els.proposals),
            h('section', { class: 'card', id: 'transcript-card' },
              h('div', { class: 'card-head' }, h('h2', null, 'Transcript'), els.entryCount),
              els.filter,
              els.entries)),
          els.side = h('div', { class: 'col side' },
            els.progress,
            h('section', { class: 'card', id: 'signoffs-card' }, els.signoffHead, els.signoffs),
            h('section', { class: 'card', id: 'verdicts-card' },
              h('div', { class: 'card-head' }, h('h2', null, 'Verdicts'), h('span', { class: 'muted small' }, 'role \u00d7 round')),
              els.verdicts))),
      ]);
    }

    function render() {
      if (!els.header) return;
      const s = st.session;
      document.title = 'agentmesh \u2014 ' + (STATUS_LABELS[s.status] || s.status) + ' \u2014 session ' + s.id;
      renderHeader(s);
      renderOutcome(s);
      renderTimeline(s);
      renderProgress(s);
      renderSignoffs(s);
      renderVerdicts(s);
      renderProposals(s);
      renderEntries(s);
      verifySoon(s);
    }

    // Re-checks the transcript when it (or the certificate) changed, then re-marks.
    function verifySoon(s) {
      const key = st.entries.length + ':' + (s.certificate ? s.certificate.signature : '');
      if (st.checking || key === st.checkedKey) return;
      st.checking = true;
      Verify.check(s, st.entries.slice()).then((result) => {
        st.checking = false;
        if (st.disposed) return;
        st.checkedKey = key;
        st.checks = result.entries;
        st.certificate = result.certificate;
        renderSignoffs(st.session);
        verifySoon(st.session);
      }, () => { st.checking = false; });
    }

    function proposals() {
      return st.entries
        .filter((e) => e.phase === 'SYNTHESIZE' && e.type === 'PROPOSAL')
        .map((e, i) => ({ version: e.proposal_version || i + 1, entry: e }));
    }

    function renderHeader(s) {
      const tokens = (s.prompt_tokens || 0) + (s.completion_tokens || 0);
      const actions = h('div', { class: 'header-actions' },
        h('a', { class: 'btn', id: 'download-md', href: '/api/sessions/' + enc(s.id) + '/export.md', download: true }, 'Download .md'),
        h('a', { class: 'btn', id: 'download-json', href: '/api/sessions/' + enc(s.id) + '/export.json', download: true }, 'Download .json'),
        isTerminal(s.status) ? null
          : h('button', { type: 'button', class: 'btn btn-danger', id: 'cancel-session', onclick: cancel }, 'Cancel'));
      fill(els.header,
        h('div', { class: 'crumbs small' }, h('a', { href: '#/' }, 'Mesh'), ' / ', 'session ', h('span', { class: 'mono' }, s.id)),
        h('div', { class: 'header-main' },
          h('h1', { id: 'session-task', class: 'task' }, s.task),
          actions),
        h('div', { class: 'header-meta' },
          statusBadge(s.status, 'session-status'),
          h('span', { id: 'session-round', class: 'meta-item' }, roundText(s)),
          h('span', { class: 'meta-item' }, plural((s.roles || []).length, 'participant')),
          h('span', { class: 'meta-item' }, plural(st.entries.length, 'entry', 'entries')),
          tokens ? h('span', { class: 'meta-item' }, num(tokens) + ' tokens') : null,
          h('span', { class: 'meta-item muted' }, 'started ' + fmtDateTime(s.created_ms))));
    }

    async function cancel(ev) {
      const button = ev.currentTarget;
      button.disabled = true;
      try {
        const s = await api('POST', '/api/sessions/' + enc(st.id) + '/cancel');
        if (s && s.id && !st.disposed) {
          onStatus({ status: s.status, round: s.round, reason: s.reason, awaiting: [], session: s });
          schedule();
        }
      } catch (err) {
        button.disabled = false;
        if (err.status !== 503) showBanner('error', ['Cancel failed: ', err.message]);
      }
    }

    function outcomeHead(title, text) {
      return h('p', { class: 'outcome-head' }, h('span', { class: 'outcome-title' }, title), h('span', { class: 'outcome-text' }, text));
    }

    function renderOutcome(s) {
      const el = els.outcome;
      el.dataset.status = s.status;
      el.className = 'outcome outcome-' + String(s.status).toLowerCase();
      const versions = proposals();
      if (s.status === 'CONSENSUS') {
        const final = versions.find((v) => v.entry.proposal_hash === s.final_hash);
        const version = s.final_version || (final && final.version);
        fill(el,
          h('div', { class: 'outcome-icon', 'aria-hidden': 'true' }, '\u2713'),
          h('div', { class: 'outcome-body' },
            outcomeHead('CONSENSUS', 'All ' + (s.roles || []).length + ' participants signed proposal v' + (version || '?') + ' in round ' + s.round + '.'),
            h('p', { class: 'hash-line' }, 'final sha256 ', h('code', { id: 'final-hash' }, s.final_hash || ''))));
      } else if (s.status === 'NO_CONSENSUS') {
        const objections = s.open_objections || [];
        fill(el,
          h('div', { class: 'outcome-icon', 'aria-hidden': 'true' }, '!'),
          h('div', { class: 'outcome-body' },
            outcomeHead('NO CONSENSUS', s.reason || 'The rounds ran out before every participant approved one version.'),
            objections.length
              ? h('ul', { class: 'objections', id: 'open-objections' },
                objections.map((o) => h('li', { dataset: { role: o.role } }, roleChip(o.role), h('span', null, o.concern))))
              : null));
      } else if (s.status === 'COMPLETED') {
        fill(el,
          h('div', { class: 'outcome-icon', 'aria-hidden': 'true' }, '\u2713'),
          h('div', { class: 'outcome-body' },
            outcomeHead('COMPLETED', s.reason || 'Every broadcast round ran.')));
      } else if (s.status === 'FAILED' || s.status === 'CANCELLED') {
        fill(el,
          h('div', { class: 'outcome-icon', 'aria-hidden': 'true' }, s.status === 'FAILED' ? '\u00d7' : '\u2013'),
          h('div', { class: 'outcome-body' },
            outcomeHead(s.status, s.reason || 'No reason was given.')));
      } else {
        fill(el,
          h('div', { class: 'outcome-icon spin', 'aria-hidden': 'true' }),
          h('div', { class: 'outcome-body' },
            outcomeHead(s.status === 'PENDING' ? 'Waiting for workers' : 'Negotiating', s.status === 'PENDING'
              ? 'The session starts when a worker holds every role.'
              : 'Round ' + s.round + ' of at most ' + s.max_rounds + ', phase ' + s.status + '.')));
      }
    }

    function renderTimeline(s) {
      const maxRound = Math.max(s.max_rounds || 0, s.round || 0, ...st.entries.map((e) => e.round || 0));
      const counts = new Map();
      for (const e of st.entries) {
        const k = phaseKey(e.round, e.phase);
        if (!counts.has(k)) counts.set(k, []);
        counts.get(k).push(e);
      }
      const terminal = isTerminal(s.status);
      const current = PHASES.indexOf(s.status) >= 0 ? phaseKey(s.round, s.status) : -1;
      const lastDone = st.entries.reduce((m, e) => Math.max(m, phaseKey(e.round, e.phase)), -1);
      const grid = h('div', { class: 'tl-grid', style: { '--rounds': maxRound + 1 } });
      grid.appendChild(h('div', { class: 'tl-corner' }));
      for (let r = 0; r <= maxRound; r++) {
        grid.appendChild(h('div', { class: 'tl-round' + (r === s.round ? ' on' : ''), dataset: { round: r } }, r === 0 ? 'Setup' : 'Round ' + r));
      }
      for (const phase of PHASES) {
        grid.appendChild(h('div', { class: 'tl-phase' }, phase));
        for (let r = 0; r <= maxRound; r++) {
          const valid = phase === 'FRAMING' ? r === 0 : r > 0;
          if (!valid) {
            grid.appendChild(h('div', { class: 'tl-cell none' }));
            continue;
          }
          const k = phaseKey(r, phase);
          const list = counts.get(k) || [];
          let state;
          if (terminal && k === lastDone && phase === 'REVIEW') state = 'done final-' + s.status.toLowerCase();
          else if (k === current && !terminal) state = 'current';
          else if (list.length || k < current || (terminal && k <= lastDone)) state = 'done';
          else state = terminal ? 'skipped' : 'upcoming';
          grid.appendChild(h('div', { class: 'tl-cell ' + state, dataset: { round: r, phase: phase, state: state.split(' ')[0] }, title: phase + ' \u00b7 round ' + r },
            cellLabel(phase, list, state)));
        }
      }
      fill(els.timeline, grid);
      els.timelineNote.textContent = terminal
        ? 'ended in ' + (s.round ? 'round ' + s.round : 'setup')
        : s.status === 'PENDING' ? 'waiting to start' : 'live \u00b7 phase by phase';
    }

    function cellLabel(phase, list, state) {
      if (!list.length) {
        if (state !== 'current') return null;
        const info = progressInfo(st.session);
        return h('span', { class: 'tl-live' }, 'live ' + info.done + '/' + info.roles.length);
      }
      if (phase === 'SYNTHESIZE') {
        const p = list[list.length - 1];
        return h('span', { class: 'tl-version' }, 'v' + (p.proposal_version || '?'));
      }
      if (phase === 'REVIEW') {
        const yes = list.filter((e) => e.verdict === 'APPROVE').length;
        const no = list.length - yes;
        return [h('span', { class: 'tl-yes' }, '\u2713' + yes), no ? h('span', { class: 'tl-no' }, '\u2717' + no) : null];
      }
      return h('span', { class: 'tl-count' }, plural(list.length, 'entry', 'entries'));
    }

    /** Who is expected in the current phase, who has answered, who is awaited. */
    function progressInfo(s) {
      const p = st.progress && st.progress.status === s.status && st.progress.round === s.round
        ? st.progress
        : (st.progress && phaseKey(st.progress.round, st.progress.status) > phaseKey(s.round, s.status) ? st.progress : null);
      const status = p ? p.status : s.status;
      const round = p ? p.round : s.round;
      const answered = new Set(p ? p.answered : []);
      for (const e of st.entries) if (e.round === round && e.phase === status) answered.add(e.role);
      let roles;
      if (status === 'FRAMING' || status === 'SYNTHESIZE') roles = [(s.roles || [])[0]];
      else if (status === 'CONTRIBUTE') roles = (s.roles || []).slice(1);
      else roles = (s.roles || []).slice();
      if (p) for (const r of p.awaiting.concat(p.answered)) if (roles.indexOf(r) < 0) roles.push(r);
      roles = roles.filter(Boolean);
      const awaiting = new Set(p ? p.awaiting.filter((r) => !answered.has(r)) : roles.filter((r) => !answered.has(r)));
      const done = roles.filter((r) => answered.has(r)).length;
      return { status: status, round: round, roles: roles, answered: answered, awaiting: awaiting, done: done };
    }

    function renderProgress(s) {
      const el = els.progress;
      els.side.classList.toggle('ended', isTerminal(s.status));
      if (isTerminal(s.status)) {
        el.dataset.status = s.status;
        const objections = st.entries.filter((e) => e.verdict === 'OBJECT').length;
        const tokens = (s.prompt_tokens || 0) + (s.completion_tokens || 0);
        const kv = (k, v) => [h('dt', null, k), h('dd', null, v)];
        fill(el, h('div', { class: 'card-head' }, h('h2', null, 'Summary')),
          h('p', { class: 'muted small', id: 'progress-summary' }, 'The session has ended (' + (STATUS_LABELS[s.status] || s.status) + ').'),
          h('dl', { class: 'kv' },
            kv('Rounds used', (s.round || 0) + ' of ' + s.max_rounds),
            kv('Proposal versions', String(proposals().length)),
            kv('Transcript entries', String(st.entries.length)),
            kv('Objections raised', String(objections)),
            kv('Duration', fmtDuration((s.updated_ms || 0) - (s.created_ms || 0))),
            tokens ? kv('Model tokens', num(s.prompt_tokens) + ' in \u00b7 ' + num(s.completion_tokens) + ' out') : null));
        return;
      }
      const info = progressInfo(s);
      el.dataset.status = info.status;
      fill(el, h('div', { class: 'card-head' }, h('h2', null, 'Current phase')),
        h('p', { class: 'progress-title', id: 'progress-summary' },
          statusBadge(info.status), ' ', info.round ? 'round ' + info.round : 'setup', ' \u00b7 ',
          info.status === 'PENDING' ? 'waiting for workers' : info.done + ' of ' + info.roles.length + ' answered'),
        h('div', { class: 'progress-bar' }, h('div', { class: 'progress-fill', style: { width: (info.roles.length ? Math.round(100 * info.done / info.roles.length) : 0) + '%' } })),
        h('ul', { class: 'progress-roles' }, info.roles.map((r) => {
          const state = info.answered.has(r) ? 'answered' : info.awaiting.has(r) ? 'awaiting' : 'idle';
          const label = state === 'answered' ? 'answered'
            : state === 'awaiting' && info.status !== 'PENDING' ? 'thinking\u2026' : '';
          return h('li', { class: 'progress-role ' + state, dataset: { role: r, state: state } },
            h('span', { class: 'dot', 'aria-hidden': 'true' }), roleChip(r),
            h('span', { class: 'muted small' }, label));
        })));
    }

    function renderSignoffs(s) {
      const versions = proposals();
      let target = null;
      if (s.final_hash) target = versions.find((v) => v.entry.proposal_hash === s.final_hash) || { version: s.final_version, entry: { proposal_hash: s.final_hash } };
      else if (versions.length) target = versions[versions.length - 1];
      const hash = target ? (target.entry.proposal_hash || s.final_hash) : '';
      const signers = new Map();
      if (hash) {
        for (const e of st.entries) {
          const approve = e.phase === 'REVIEW' && e.verdict === 'APPROVE';
          if ((approve || e.type === 'SIGNOFF') && e.proposal_hash === hash && !signers.has(e.role)) signers.set(e.role, e);
        }
      }
      const roles = s.roles || [];
      const signed = roles.filter((r) => signers.has(r)).length;
      fill(els.signoffHead, h('h2', null, 'Sign-offs'),
        h('span', { class: 'count' + (signed === roles.length && roles.length ? ' ok' : ''), id: 'signoff-count' }, signed + ' / ' + roles.length));
      const assignments = s.assignments || {};
      fill(els.signoffs,
        h('p', { class: 'muted small signoff-target' }, target
          ? ['on ', h('strong', null, 'v' + (target.version || '?')), ' \u00b7 sha256 ', h('code', { title: hash }, shortHash(hash)), s.final_hash ? ' (final)' : ' (latest)']
          : 'No proposal yet.'),
        h('ul', { class: 'signoff-list' }, roles.map((r) => {
          const e = signers.get(r);
          const check = e ? st.checks.get(e.seq) : null;
          const verified = check ? (check.ok ? 'true' : 'false') : 'pending';
          return h('li', { class: 'signoff' + (e ? ' signed' : ''), dataset: { role: r, signed: e ? 'true' : 'false', verified: e ? verified : 'none' } },
            h('span', { class: 'sig-mark', 'aria-hidden': 'true' }, e ? '\u2713' : '\u2022'),
            roleChip(r),
            h('span', { class: 'mono small muted worker-ref' }, (e && e.worker_id) || assignments[r] || ''),
            h('span', { class: 'small ' + (e ? 'ok-text' : 'muted') }, e ? 'signed ' + fmtClock(entryTime(e)) : 'not signed'),
            e ? h('span', { class: 'small verify-mark ' + (verified === 'true' ? 'ok-text' : 'muted'), title: check && check.why ? check.why : (e.public_key ? 'key ' + e.public_key : '') },
              verified === 'true' ? 'verified here' : verified === 'false' ? 'not verified' : 'checking\u2026') : null);
        })),
        st.certificate ? h('p', { class: 'small certificate-mark ' + (st.certificate.ok ? 'ok-text' : 'muted'), id: 'certificate-mark', dataset: { verified: st.certificate.ok ? 'true' : 'false' }, title: st.certificate.why || st.certificate.key || '' },
          st.certificate.ok ? 'Certificate verified here: every participant signed this hash; coordinator key ' + shortHash(st.certificate.key) : 'Certificate not verified: ' + st.certificate.why) : null);
    }

    function renderVerdicts(s) {
      const reviews = st.entries.filter((e) => e.phase === 'REVIEW');
      const rounds = [];
      for (let r = 1; r <= Math.max(s.round || 0, ...reviews.map((e) => e.round)); r++) rounds.push(r);
      if (!rounds.length) {
        fill(els.verdicts, h('p', { class: 'muted small' }, 'No review yet.'));
        return;
      }
      const cell = new Map();
      for (const e of reviews) cell.set(e.role + '\u0000' + e.round, e);
      const roles = (s.roles || []).slice();
      for (const e of reviews) if (roles.indexOf(e.role) < 0) roles.push(e.role);
      fill(els.verdicts, h('table', { class: 'matrix' },
        h('thead', null, h('tr', null, h('th', null, 'Role'), rounds.map((r) => h('th', null, 'R' + r)))),
        h('tbody', null, roles.map((role) => h('tr', { dataset: { role: role } },
          h('th', { scope: 'row' }, roleChip(role)),
          rounds.map((r) => {
            const e = cell.get(role + '\u0000' + r);
            const verdict = e ? e.verdict : null;
            const concerns = e && e.concerns && e.concerns.length ? e.concerns.join('\n') : null;
            return h('td', { class: 'verdict-cell', dataset: { role: role, round: r, verdict: verdict || 'NONE' }, title: concerns },
              verdict ? verdictBadge(verdict) : h('span', { class: 'muted' }, '\u00b7'),
              e && e.concerns && e.concerns.length ? h('span', { class: 'concern-count small muted' }, String(e.concerns.length)) : null);
          }))))));
    }

    function renderProposals(s) {
      const versions = proposals();
      const el = els.proposals;
      if (!versions.length) {
        fill(el, h('p', { class: 'muted small' }, 'The supervisor writes proposal v1 after the first contributions.'));
        return;
      }
      const latest = versions[versions.length - 1].version;
      if (st.version === null || st.followLatest || !versions.some((v) => v.version === st.version)) st.version = latest;
      const index = versions.findIndex((v) => v.version === st.version);
      const cur = versions[index];
      const prev = index > 0 ? versions[index - 1] : null;
      const tabs = h('div', { class: 'tabs', role: 'tablist' }, versions.map((v) => h('button', {
        type: 'button', role: 'tab', class: 'version-tab' + (v.version === st.version ? ' on' : '') + (s.final_hash && v.entry.proposal_hash === s.final_hash ? ' final' : ''),
        dataset: { version: v.version }, 'aria-selected': v.version === st.version ? 'true' : 'false',
        onclick: () => { st.version = v.version; st.followLatest = v.version === latest; renderProposals(st.session); },
      }, 'v' + v.version)));
      const modes = h('div', { class: 'seg' },
        h('button', { type: 'button', id: 'mode-diff', class: st.mode === 'diff' ? 'on' : '', onclick: () => { st.mode = 'diff'; renderProposals(st.session); } }, 'Changes'),
        h('button', { type: 'button', id: 'mode-full', class: st.mode === 'full' ? 'on' : '', onclick: () => { st.mode = 'full'; renderProposals(st.session); } }, 'Full text'));
      const meta = h('p', { class: 'muted small version-meta' },
        'v' + cur.version + ' \u00b7 round ' + cur.entry.round + ' \u00b7 ' + fmtClock(entryTime(cur.entry)) + ' \u00b7 sha256 ',
        h('code', { title: cur.entry.proposal_hash || '' }, shortHash(cur.entry.proposal_hash)),
        s.final_hash && cur.entry.proposal_hash === s.final_hash ? h('span', { class: 'badge final-badge' }, 'FINAL') : null);
      const body = h('div', { class: 'diff', id: 'diff', dataset: { version: cur.version, base: prev ? prev.version : '' } });
      if (st.mode === 'diff' && prev) {
        const rows = diffLines(splitLines(prev.entry.content), splitLines(cur.entry.content));
        const added = rows.filter((r) => r.kind === 'add').length;
        const removed = rows.filter((r) => r.kind === 'del').length;
        meta.appendChild(h('span', { class: 'diff-stat' }, ' \u00b7 vs v' + prev.version + ' ',
          h('span', { class: 'add-text' }, '+' + added), ' ', h('span', { class: 'del-text' }, '\u2212' + removed)));
        renderDiff(body, rows);
      } else {
        if (st.mode === 'diff') meta.appendChild(document.createTextNode(' \u00b7 first version'));
        body.classList.add('full');
        splitLines(cur.entry.content).forEach((text, i) => body.appendChild(
          h('div', { class: 'diff-line same' }, h('span', { class: 'ln' }, String(i + 1)),
            h('span', { class: 'code' }, text === '' ? '\u00a0' : text))));
      }
      fill(el, h('div', { class: 'proposal-bar' }, tabs, modes), meta, body);
    }

    function renderEntries(s) {
      els.entryCount.textContent = String(st.entries.length);
      // Filter bar: All + each role that has entries, in session order.
      const counts = new Map();
      for (const e of st.entries) counts.set(e.role, (counts.get(e.role) || 0) + 1);
      const roles = sortRoles(Array.from(new Set((s.roles || []).concat(Array.from(counts.keys())))));
      fill(els.filter,
        filterButton('all', 'All', st.entries.length),
        roles.map((r) => filterButton(r, r, counts.get(r) || 0)));
      // Entries: appended in seq order; a full rebuild only if one arrived out of order.
      const rendered = st.rendered;
      const inOrder = rendered.length <= st.entries.length &&
        rendered.every((seq, i) => st.entries[i].seq === seq);
      if (!inOrder) {
        els.entries.replaceChildren();
        st.rendered = [];
      }
      if (!st.entries.length && !els.entries.firstChild) {
        els.entries.appendChild(h('p', { class: 'muted small', id: 'entries-empty' }, 'No entries yet.'));
      }
      for (let i = st.rendered.length; i < st.entries.length; i++) {
        const e = st.entries[i];
        const empty = byId('entries-empty');
        if (empty) empty.remove();
        const prev = i > 0 ? st.entries[i - 1] : null;
        if (!prev || prev.round !== e.round) {
          els.entries.appendChild(h('div', { class: 'round-divider', dataset: { round: e.round } },
            h('span', null, e.round === 0 ? 'Setup' : 'Round ' + e.round)));
        }
        const card = entryCard(e);
        if (st.live) card.classList.add('fresh');
        els.entries.appendChild(card);
        st.rendered.push(e.seq);
      }
      applyFilter();
    }

    function filterButton(role, label, count) {
      return h('button', {
        type: 'button', class: 'filter' + (st.filter === role ? ' on' : ''), dataset: { role: role },
        'aria-pressed': st.filter === role ? 'true' : 'false',
        onclick: () => { st.filter = role; renderEntries(st.session); },
      }, role === 'all' ? label : roleChip(label), h('span', { class: 'filter-count' }, String(count)));
    }

    function applyFilter() {
      for (const el of els.entries.children) {
        if (el.classList.contains('entry')) el.hidden = st.filter !== 'all' && el.dataset.role !== st.filter;
        else if (el.classList.contains('round-divider')) el.hidden = false;
      }
    }

    function entryCard(e) {
      const lines = splitLines(e.content);
      const long = lines.length > COLLAPSE_LINES || String(e.content || '').length > 1600;
      const pre = h('pre', { class: 'content' + (long ? ' collapsed' : '') }, String(e.content || ''));
      let more = null;
      if (long) {
        more = h('button', { type: 'button', class: 'link-btn more' }, 'Show all ' + plural(lines.length, 'line'));
        more.addEventListener('click', () => {
          const open = pre.classList.toggle('collapsed');
          more.textContent = open ? 'Show all ' + plural(lines.length, 'line') : 'Show less';
        });
      }
      const tokens = (e.prompt_tokens || 0) + (e.completion_tokens || 0);
      const concerns = e.concerns && e.concerns.length
        ? h('ul', { class: 'concerns' }, e.concerns.map((c) => h('li', null, c)))
        : null;
      return h('article', { class: 'entry', dataset: { seq: e.seq, role: e.role, type: e.type, round: e.round, phase: e.phase }, style: { '--hue': hueOf(e.role) } },
        h('header', { class: 'entry-head' },
          h('span', { class: 'seq mono' }, '#' + e.seq),
          roleChip(e.role),
          typeBadge(e.type),
          e.proposal_version ? h('span', { class: 'badge version', title: e.proposal_hash ? 'sha256 ' + e.proposal_hash : null }, 'v' + e.proposal_version) : null,
          verdictBadge(e.verdict),
          h('span', { class: 'entry-meta muted small' },
            (e.round === 0 ? 'setup' : 'R' + e.round) + ' \u00b7 ' + e.phase + ' \u00b7 ' + fmtClock(entryTime(e)),
            e.worker_id ? [' \u00b7 ', h('span', { class: 'mono' }, e.worker_id)] : null,
            tokens ? ' \u00b7 ' + num(tokens) + ' tok' : null)),
        concerns,
        pre,
        more);
    }

    return {
      dispose() {
        st.disposed = true;
        if (st.es) st.es.close();
        clearTimeout(st.timer);
      },
    };
  }

  // For tests and the console: the diff is a pure function.
  window.agentmesh = Object.freeze({ diffLines: diffLines });

  window.addEventListener('hashchange', route);
  route();
})();
