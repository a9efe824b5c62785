// Polls the snapshot every two seconds and updates the page in place. It formats and draws
// exactly as view.go does, so a change to one belongs in the other. It writes text only with
// textContent, never markup, so nothing in a snapshot can become HTML.
(() => {
  'use strict';
  const every = 2000;
  const yTicks = 4;
  const seriesStyles = 6;
  const svgNS = 'http://www.w3.org/2000/svg';

  const $ = (id) => document.getElementById(id);
  const chart = $('chart');
  const plot = $('plot');
  const px = +plot.getAttribute('x');
  const py = +plot.getAttribute('y');
  const pw = +plot.getAttribute('width');
  const ph = +plot.getAttribute('height');
  const windowMs = +chart.getAttribute('data-window') * 1000;
  // /status/data next to /status, wherever the page is mounted.
  const url = location.pathname.replace(/\/+$/, '') + '/data';

  const count = (n) => String(n || 0);
  // tenths rounds as view.go's formatTenths does (halves up; the numbers are never negative).
  const tenths = (f) => {
    let n = Math.round(f * 10);
    const sign = n < 0 ? '-' : '';
    n = Math.abs(n);
    return sign + Math.floor(n / 10) + '.' + (n % 10);
  };
  const rate = (r) => tenths(r || 0);
  const coord = tenths;
  const pad = (n) => String(n).padStart(2, '0');
  const age = (v) => {
    const s = Math.floor(Math.max(v || 0, 0));
    if (s < 60) return s + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm ' + pad(s % 60) + 's';
    if (s < 86400) return Math.floor(s / 3600) + 'h ' + pad(Math.floor((s % 3600) / 60)) + 'm';
    return Math.floor(s / 86400) + 'd ' + Math.floor((s % 86400) / 3600) + 'h';
  };
  const compact = (n) => {
    if (n >= 1e6) return String(n / 1e6) + 'M';
    if (n >= 1e3) return String(n / 1e3) + 'k';
    return String(n);
  };
  const isZero = (t) => !t || t.startsWith('0001-01-01T00:00:00');
  const when = (t) => new Date(t).toISOString().slice(0, 19).replace('T', ' ') + ' UTC';
  const niceStep = (top) => {
    const target = Math.max(Math.ceil(top / yTicks), 1);
    let p = 1;
    while (p * 10 < target) p *= 10;
    for (const m of [1, 2, 5]) if (m * p >= target) return m * p;
    return 10 * p;
  };

  const setText = (node, text) => {
    if (node.textContent !== text) node.textContent = text;
  };
  const setAttr = (node, name, value) => {
    if (node.getAttribute(name) !== value) node.setAttribute(name, value);
  };
  const make = (tag, attrs, text) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const makeSVG = (tag, attrs) => {
    const node = document.createElementNS(svgNS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    return node;
  };

  // keyOf names a row by the data attributes it carries, which are also the names of the
  // snapshot's fields, so that it finds a rendered row from its item and back.
  const keyOf = (names) => (o) => names.map((n) => o[n]).join('\u0000');

  // place puts node at position i of parent unless it already is there, so that an unchanged
  // page sees no change to its DOM.
  const place = (parent, node, i) => {
    if (parent.children[i] !== node) parent.insertBefore(node, parent.children[i] || null);
  };

  // syncRows makes tbody's rows show items, in order: it keeps the rows it has for them,
  // builds the missing ones, drops the rest, and shows emptyText when there is nothing.
  const syncRows = (tbody, items, key, build, fill, emptyText, columns) => {
    const old = new Map();
    for (const tr of Array.from(tbody.rows)) {
      if (!tr.classList.contains('empty')) old.set(key(tr.dataset), tr);
    }
    const empty = tbody.querySelector('tr.empty');
    if (items.length && empty) empty.remove();
    items.forEach((item, i) => {
      const k = key(item);
      let tr = old.get(k);
      if (tr) old.delete(k);
      else tr = build(item);
      fill(tr, item);
      place(tbody, tr, i);
    });
    old.forEach((tr) => tr.remove());
    if (!items.length && !empty) {
      const tr = make('tr', { class: 'empty' });
      tr.append(make('td', { colspan: String(columns) }, emptyText));
      tbody.append(tr);
    }
  };

  const fields = [
    ['pending', count],
    ['in_flight', count],
    ['scheduled', count],
    ['retrying', count],
    ['oldest_age_seconds', age],
    ['send_rate', rate],
    ['failure_rate', rate, true],
    ['dead_letters', count, true],
  ];

  const drawQueues = (channels) => {
    syncRows($('queues').tBodies[0], channels, keyOf(['channel']),
      (c) => {
        const tr = make('tr', { 'data-channel': c.channel });
        tr.append(make('th', { scope: 'row', 'data-channel': c.channel, 'data-field': 'channel' }, c.channel));
        for (const [field] of fields) {
          tr.append(make('td', { class: 'num', 'data-channel': c.channel, 'data-field': field }));
        }
        return tr;
      },
      (tr, c) => {
        fields.forEach(([field, format, warns], i) => {
          const td = tr.cells[i + 1];
          setText(td, format(c[field]));
          td.classList.toggle('warn', Boolean(warns && c[field] > 0));
        });
      },
      'No channels reported yet.', 9);
  };

  const drawDeadLetters = (groups) => {
    syncRows($('dead-letters').tBodies[0], groups, keyOf(['channel', 'reason']),
      (g) => {
        const tr = make('tr', { 'data-channel': g.channel, 'data-reason': g.reason });
        tr.append(make('td', { 'data-field': 'channel' }, g.channel),
          make('td', { 'data-field': 'reason' }, g.reason),
          make('td', { class: 'num', 'data-field': 'count' }));
        return tr;
      },
      (tr, g) => setText(tr.cells[2], count(g.count)),
      'No dead letters.', 3);
  };

  const drawCircuits = (circuits) => {
    syncRows($('circuits').tBodies[0], circuits, keyOf(['channel', 'provider', 'worker']),
      (c) => {
        const tr = make('tr', { 'data-channel': c.channel, 'data-provider': c.provider, 'data-worker': c.worker });
        const state = make('td', { 'data-field': 'state' });
        state.append(make('span', { class: 'state' }));
        tr.append(make('td', { 'data-field': 'channel' }, c.channel),
          make('td', { 'data-field': 'provider' }, c.provider),
          make('td', { 'data-field': 'worker' }, c.worker),
          state,
          make('td', { 'data-field': 'updated' }));
        return tr;
      },
      (tr, c) => {
        setAttr(tr, 'class', 'state-' + c.state);
        setAttr(tr, 'data-state', c.state);
        setText(tr.cells[1], c.provider + (c.active ? ' (active)' : ''));
        setText(tr.cells[3].firstElementChild, c.state);
        const cell = tr.cells[4];
        const reported = isZero(c.updated) ? '' : c.updated;
        const shown = cell.querySelector('time');
        if ((shown ? shown.getAttribute('datetime') : '') !== reported) {
          if (reported) cell.replaceChildren(make('time', { datetime: reported }, when(reported)));
          else cell.replaceChildren('–');
        }
      },
      'No circuits reported.', 5);
    const open = circuits.filter((c) => c.state === 'open').length;
    const badge = $('open-circuits');
    setText(badge, '(' + open + ' open)');
    badge.classList.toggle('warn', open > 0);
  };

  const drawChart = (latest, history) => {
    const end = isZero(latest.time) && history.length ? history[history.length - 1].time : latest.time;
    const endMs = Date.parse(end);
    const startMs = endMs - windowMs;

    // Channels in the latest sample's order, then any others in the order history shows them.
    const order = [];
    const points = new Map();
    const seen = (ch) => {
      if (!points.has(ch)) {
        points.set(ch, []);
        order.push(ch);
      }
    };
    const current = new Map();
    for (const c of latest.channels || []) {
      seen(c.channel);
      current.set(c.channel, (c.pending || 0) + (c.in_flight || 0));
    }
    let top = 0;
    for (const s of history) {
      const ms = Date.parse(s.time);
      if (!(ms >= startMs && ms <= endMs)) continue;
      for (const c of s.channels || []) {
        seen(c.channel);
        const d = (c.pending || 0) + (c.in_flight || 0);
        points.get(c.channel).push([ms, d]);
        top = Math.max(top, d);
      }
    }

    const step = niceStep(top);
    const yMax = step * yTicks;
    for (const label of chart.querySelectorAll('text[data-tick]')) {
      setText(label, compact(step * +label.getAttribute('data-tick')));
    }

    const group = $('series');
    const legend = $('legend');
    const lines = new Map(Array.from(group.children, (n) => [n.getAttribute('data-channel'), n]));
    const items = new Map(Array.from(legend.children, (n) => [n.getAttribute('data-channel'), n]));
    const desc = [];
    let empty = true;
    order.forEach((ch, i) => {
      const style = 's' + (i % seriesStyles);
      const pts = points.get(ch).map(([ms, d]) =>
        coord(px + ((ms - startMs) / windowMs) * pw) + ',' + coord(py + ph - (d / yMax) * ph));
      if (pts.length === 1) pts.push(pts[0]); // a zero-length line draws a dot
      if (pts.length) empty = false;

      let line = lines.get(ch);
      lines.delete(ch);
      if (!line) line = makeSVG('polyline', { 'data-channel': ch });
      setAttr(line, 'class', style);
      setAttr(line, 'points', pts.join(' '));
      place(group, line, i);

      const depth = current.has(ch) ? count(current.get(ch)) : '–';
      if (current.has(ch)) desc.push(ch + ' ' + depth);
      let item = items.get(ch);
      items.delete(ch);
      if (!item) {
        item = make('li', { 'data-channel': ch });
        const swatch = makeSVG('svg', { class: 'swatch', viewBox: '0 0 28 10', 'aria-hidden': 'true' });
        swatch.append(makeSVG('line', { x1: '2', y1: '5', x2: '26', y2: '5' }));
        const label = make('span');
        label.append(make('span', { 'data-field': 'channel' }, ch), ': ', make('span', { 'data-field': 'depth' }));
        item.append(swatch, label);
      }
      setAttr(item.querySelector('line'), 'class', style);
      setText(item.querySelector('[data-field=depth]'), depth);
      place(legend, item, i);
    });
    lines.forEach((n) => n.remove());
    items.forEach((n) => n.remove());

    const note = $('chart-empty');
    if (empty) note.removeAttribute('display');
    else setAttr(note, 'display', 'none');

    let text;
    if (empty && !desc.length) text = 'No samples in the last 15 minutes.';
    else if (!desc.length) text = 'No current sample; the scale runs from 0 to ' + compact(yMax) + '.';
    else text = 'Latest queue depth: ' + desc.join(', ') + '. The scale runs from 0 to ' + compact(yMax) + '.';
    setText($('chart-desc'), text);
  };

  const draw = (snap) => {
    const latest = snap.latest || {};
    drawQueues(latest.channels || []);
    drawChart(latest, snap.history || []);
    drawDeadLetters(snap.dead_letters || []);
    drawCircuits(snap.circuits || []);
    const sampled = $('sampled');
    if (isZero(latest.time)) {
      sampled.removeAttribute('datetime');
      setText(sampled, 'no sample yet');
    } else {
      setAttr(sampled, 'datetime', latest.time);
      setText(sampled, when(latest.time));
    }
    // Last, so that whoever waits for it finds the whole page drawn.
    document.body.dataset.updated = isZero(latest.time) ? '' : latest.time;
  };

  const problem = $('poll-error');
  const poll = async () => {
    try {
      const res = await fetch(url, { cache: 'no-store', headers: { Accept: 'application/json' } });
      if (!res.ok) throw new Error('HTTP ' + res.status);
      draw(await res.json());
      problem.hidden = true;
    } catch (err) {
      setText(problem, 'Live updates failed (' + (err && err.message ? err.message : 'unknown error') +
        '); trying again every 2 seconds. The figures below may be out of date.');
      problem.hidden = false;
    }
    setTimeout(poll, every);
  };
  setText($('live'), 'It updates every 2 seconds.');
  poll();
})();
