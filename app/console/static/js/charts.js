// Inline SVG charts (no chart library): bars for counts per bucket, a line for a series.
const NS = 'http://www.w3.org/2000/svg';

function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

// points: [{label, value}]; a titled, labelled figure readable by screen readers.
export function barChart(title, points, { unit = '', height = 160 } = {}) {
  const width = 480;
  const max = Math.max(1, ...points.map((p) => p.value));
  const pad = 24;
  const bar = (width - pad) / Math.max(1, points.length);
  const root = svg('svg', { viewBox: `0 0 ${width} ${height + 20}`, role: 'img', class: 'chart', 'aria-label': `${title}: ${points.length} values, highest ${max}${unit}` });
  root.append(svg('title', {}, title));
  root.append(svg('line', { x1: pad, y1: height, x2: width, y2: height, class: 'axis' }));
  root.append(svg('text', { x: 0, y: 12, class: 'chart-label' }, `${max}${unit}`));
  points.forEach((p, i) => {
    const h = Math.round((p.value / max) * (height - 20));
    const gap = bar > 6 ? 2 : 0.5;
    const rect = svg('rect', { x: pad + i * bar + gap / 2, y: height - h, width: Math.max(0.5, bar - gap), height: h, class: 'bar' });
    rect.append(svg('title', {}, `${p.label}: ${p.value}${unit}`));
    root.append(rect);
  });
  if (points.length) {
    root.append(svg('text', { x: pad, y: height + 16, class: 'chart-label' }, points[0].label));
    root.append(svg('text', { x: width, y: height + 16, class: 'chart-label', 'text-anchor': 'end' }, points[points.length - 1].label));
  }
  return root;
}

export function lineChart(title, points, { unit = '', height = 160 } = {}) {
  const width = 480;
  const pad = 30;
  const max = Math.max(1, ...points.map((p) => p.value));
  const x = (i) => pad + (i * (width - pad)) / Math.max(1, points.length - 1);
  const y = (v) => height - Math.round((v / max) * (height - 20));
  const root = svg('svg', { viewBox: `0 0 ${width} ${height + 20}`, role: 'img', class: 'chart', 'aria-label': `${title}: highest ${Math.round(max)}${unit}` });
  root.append(svg('title', {}, title));
  root.append(svg('line', { x1: pad, y1: height, x2: width, y2: height, class: 'axis' }));
  root.append(svg('text', { x: 0, y: 12, class: 'chart-label' }, `${Math.round(max)}${unit}`));
  if (points.length) {
    root.append(svg('polyline', { points: points.map((p, i) => `${x(i)},${y(p.value)}`).join(' '), class: 'line' }));
    points.forEach((p, i) => {
      const dot = svg('circle', { cx: x(i), cy: y(p.value), r: 3, class: 'dot' });
      dot.append(svg('title', {}, `${p.label}: ${p.value}${unit}`));
      root.append(dot);
    });
    root.append(svg('text', { x: pad, y: height + 16, class: 'chart-label' }, points[0].label));
    root.append(svg('text', { x: width, y: height + 16, class: 'chart-label', 'text-anchor': 'end' }, points[points.length - 1].label));
  }
  return root;
}
