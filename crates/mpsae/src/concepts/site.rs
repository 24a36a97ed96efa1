//! The static site of the concept browser: `index.html` (curves, explained variance, the
//! frequency histogram, a sortable and filterable table of every concept, a token search) and
//! one page per concept (examples in context, quantile samples, histograms, parents, children,
//! nearest atoms). Plain HTML, CSS and a small script of our own; opens from the file system.

use super::stats::{value_bin, Concept, LOG_BINS, LOG_MAX, LOG_MIN};
use super::svg::{bar_chart, esc, line_chart, Series};
use super::tokens::{label_of, RowInfo};
use super::Analysis;
use crate::train::EpochReport;
use crate::{Error, Result};
use std::collections::HashMap;
use std::fmt::Write;
use std::path::Path;

const CSS: &str = r#"body{font-family:system-ui,sans-serif;margin:0;color:#111827;background:#f9fafb}
header{background:#1f2937;color:#f9fafb;padding:12px 24px}header a{color:#93c5fd}
main{padding:16px 24px}h1{font-size:20px;margin:0}h2{font-size:16px;margin:20px 0 8px}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{background:#fff;border:1px solid #e5e7eb;border-radius:6px}
.note{color:#6b7280;font-style:italic}.controls{display:flex;gap:12px;margin:8px 0;align-items:center}
input{padding:6px 8px;border:1px solid #d1d5db;border-radius:4px;font-size:14px}
table{border-collapse:collapse;background:#fff;font-size:13px}th,td{padding:4px 8px;border-bottom:1px solid #e5e7eb;text-align:left}
th{cursor:pointer;background:#f3f4f6;position:sticky;top:0}th.sorted{color:#2563eb}
.ex{white-space:pre-wrap;margin:4px 0;padding:6px 8px;background:#fff;border:1px solid #e5e7eb;border-radius:4px;font-family:ui-monospace,monospace;font-size:13px}
.ex .v{color:#6b7280;display:inline-block;min-width:70px}.tok{padding:1px 2px;border-radius:2px}
.hit{outline:2px solid #111827}.pos{background:rgba(37,99,235,var(--a))}.neg{background:rgba(220,38,38,var(--a))}
.rel a{margin-right:10px}.lbl{color:#374151;font-size:12px}.stats{color:#d1d5db}.img{display:inline-block;margin:6px;text-align:center;font-size:11px}
.crop{position:relative;display:inline-block}.crop img{width:160px;height:160px;image-rendering:pixelated}
.mark{position:absolute;border:2px solid #facc15;box-sizing:border-box}
#results{margin:6px 0;color:#374151}"#;

/// Concepts per shard of the concept pages' data.
pub const SHARD: usize = 256;

/// The one concept page: reads the concept from the location's hash, loads its shard (a script,
/// so the site opens from the file system) and shows it; following a link to another concept
/// changes the hash.
const CONCEPT_SCRIPT: &str = r#"// The concept page: concept.html#N shows concept N from shards/(N / SHARD).js.
(function () {
  const loaded = new Map();
  const waiting = new Map();
  window.mpsaeShard = function (k, entries) {
    loaded.set(k, entries);
    (waiting.get(k) || []).forEach(f => f());
    waiting.delete(k);
  };
  function shard(k, then) {
    if (loaded.has(k)) return then();
    if (!waiting.has(k)) {
      waiting.set(k, []);
      const s = document.createElement('script');
      s.src = 'shards/' + k + '.js';
      s.onerror = () => show(null, 'the data of this concept could not be read (shards/' + k + '.js)');
      document.head.appendChild(s);
    }
    waiting.get(k).push(then);
  }
  function show(entry, note) {
    const box = document.getElementById('concept');
    const header = document.querySelector('header');
    if (entry) {
      header.innerHTML = entry[0];
      box.innerHTML = entry[1];
      document.title = TITLE + ': ' + header.querySelector('h1').textContent;
    } else {
      box.innerHTML = '<p class="note" id="missing">' + note + '</p>';
    }
    window.scrollTo(0, 0);
  }
  function render() {
    const j = parseInt(location.hash.replace(/^#/, ''), 10);
    if (!(j >= 0 && j < CONCEPTS_TOTAL)) {
      document.getElementById('title').textContent = 'No concept';
      return show(null, 'give a concept number after # (0 to ' + (CONCEPTS_TOTAL - 1) + ')');
    }
    const k = Math.floor(j / SHARD);
    shard(k, () => {
      const entry = loaded.get(k)[String(j)];
      if (entry) return show(entry);
      document.getElementById('title').textContent = 'Concept #' + j;
      show(null, 'This concept never fires on these rows (dead): it has no examples.');
    });
  }
  window.addEventListener('hashchange', render);
  render();
})();
"#;

const SCRIPT: &str = r#"// The concept table: sort by a column, filter by text, search a token.
(function () {
  const table = document.getElementById('concepts');
  const body = table.querySelector('tbody');
  const filter = document.getElementById('filter');
  const search = document.getElementById('search');
  const results = document.getElementById('results');
  const byToken = new Map();
  for (const [tok, hits] of TOKENS) {
    const key = tok.replace(/^[\u0120\u2581]+/, '').trim().toLowerCase();
    const merged = byToken.get(key) || new Map();
    for (const [c, n] of hits) merged.set(c, (merged.get(c) || 0) + n);
    byToken.set(key, merged);
  }
  let sortKey = 1, sortDir = -1;
  const fmt = (v, d) => (typeof v === 'number' ? v.toFixed(d) : v);
  function render() {
    const text = filter.value.trim().toLowerCase();
    const tok = search.value.trim().toLowerCase();
    const hits = tok ? (byToken.get(tok) || new Map()) : null;
    let rows = CONCEPTS.filter(r => (!hits || hits.has(r[0])) && (!text || String(r[0]) === text || r[5].toLowerCase().includes(text)));
    if (hits) {
      rows.sort((a, b) => hits.get(b[0]) - hits.get(a[0]) || a[0] - b[0]);
      results.textContent = rows.length + ' concepts fire on "' + search.value.trim() + '"';
    } else {
      rows.sort((a, b) => (a[sortKey] < b[sortKey] ? -1 : a[sortKey] > b[sortKey] ? 1 : 0) * sortDir || a[0] - b[0]);
      results.textContent = rows.length + ' of ' + CONCEPTS.length + ' concepts';
    }
    const html = [];
    for (const r of rows.slice(0, 2000)) {
      const c = hits ? hits.get(r[0]) : 0;
      const n = hits ? ' <span class="note">(' + c + (c === 1 ? ' row' : ' rows') + ')</span>' : '';
      html.push('<tr data-concept="' + r[0] + '"><td><a href="concept.html#' + r[0] + '">#' + r[0] + '</a>' + n +
        '</td><td>' + fmt(r[1], 5) + '</td><td>' + fmt(r[2], 4) + '</td><td>' + fmt(r[3], 2) + '</td><td>' +
        fmt(r[4], 2) + '</td><td>' + r[5].replace(/&/g, '&amp;').replace(/</g, '&lt;') + '</td></tr>');
    }
    body.innerHTML = html.join('');
    table.querySelectorAll('th').forEach((th, i) => th.classList.toggle('sorted', i === sortKey && !hits));
  }
  table.querySelectorAll('th').forEach((th, i) => th.addEventListener('click', () => {
    sortDir = sortKey === i ? -sortDir : (i === 0 || i === 5 ? 1 : -1);
    sortKey = i;
    render();
  }));
  filter.addEventListener('input', render);
  search.addEventListener('input', render);
  const m = location.hash.match(/search=([^&]*)/);
  if (m) search.value = decodeURIComponent(m[1]);
  render();
})();
"#;

/// JSON for a `<script>` (no `</script>` inside).
fn js(v: &serde_json::Value) -> String {
    v.to_string().replace("</", "<\\/")
}

fn page(title: &str, up: &str, header: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><link rel=\"stylesheet\" href=\"{up}style.css\"></head>\n<body><header>{header}</header><main>{body}</main></body></html>\n",
        t = esc(title)
    )
}

/// Writes the site of `a` into `out`: `metrics` are the run's epochs (none: the overview says
/// it has no curves), `images` a folder holding the images a patch table names.
pub fn write(
    a: &Analysis,
    metrics: Option<&[EpochReport]>,
    images: Option<&Path>,
    out: &Path,
    title: &str,
) -> Result<()> {
    std::fs::create_dir_all(out.join("shards")).map_err(|e| Error::io(out, e))?;
    // A site written by an older version had one page per concept: gone, so no stale page stays.
    let _ = std::fs::remove_dir_all(out.join("concepts"));
    // Plain writes: the site is regenerated whole from the model, and one fsync per page (16384
    // of them at c = 16384) would cost more than the analysis.
    let save = |name: &str, text: &str| {
        let p = out.join(name);
        std::fs::write(&p, text).map_err(|e| Error::io(&p, e))
    };
    save("style.css", CSS)?;
    save("table.js", SCRIPT)?;
    let (d, c, k) = a.shape;
    let n = a.stats.rows;
    let label = |i: usize| a.tokens.as_ref().map_or(format!("row {i}"), |t| t.label(i));
    // Each concept's top tokens (or images): the table's column, and the short label every link
    // to the concept carries.
    let tops: Vec<Vec<String>> = a
        .stats
        .concepts
        .iter()
        .map(|s| {
            let mut tops: Vec<String> = Vec::new();
            for &(_, i) in &s.top {
                let l = match a.tokens.as_ref().and_then(|t| t.rows.get(i)) {
                    Some(RowInfo::Patch { image, .. }) => {
                        image.rsplit('/').next().unwrap_or(image).to_string()
                    }
                    _ => label(i),
                };
                if !tops.contains(&l) && tops.len() < 6 {
                    tops.push(l);
                }
            }
            tops
        })
        .collect();
    let concept_labels: Vec<String> = tops
        .iter()
        .map(|t| if t.is_empty() { "(never fires)".to_string() } else { t[..t.len().min(3)].join(" · ") })
        .collect();
    let rows: Vec<serde_json::Value> = a
        .stats
        .concepts
        .iter()
        .enumerate()
        .map(|(j, s)| {
            serde_json::json!([
                j,
                s.frequency(n),
                s.mean_abs(),
                s.positive_share(),
                s.mean_step(),
                tops[j].join(" · ")
            ])
        })
        .collect();
    let tokens: Vec<serde_json::Value> =
        a.token_index.iter().map(|(t, v)| serde_json::json!([t, v])).collect();
    save(
        "data.js",
        &format!(
            "const CONCEPTS = {};\nconst TOKENS = {};\n",
            js(&serde_json::Value::Array(rows)),
            js(&serde_json::Value::Array(tokens))
        ),
    )?;

    // Overview.
    let mut body = String::new();
    let _ = write!(body, "<h2>Training</h2><div class=\"charts\">");
    match metrics {
        Some(m) if !m.is_empty() => {
            let curve = |name: &str, f: &dyn Fn(&EpochReport) -> f64| {
                line_chart(
                    name,
                    "epoch",
                    name,
                    &[Series {
                        name: name.into(),
                        points: m.iter().map(|e| (e.epoch as f64, f(e))).collect(),
                    }],
                    300.0,
                    200.0,
                )
            };
            body.push_str(&curve("loss", &|e| e.avg_loss));
            body.push_str(&curve("explained variance", &|e| e.explained_variance));
            body.push_str(&curve("r2_score (overcomplete)", &|e| e.r2));
            body.push_str(&curve("L0", &|e| e.l0));
            body.push_str(&curve("dead %", &|e| 100.0 * e.dead_ratio));
        }
        _ => body.push_str(
            "<p class=\"note\" id=\"no-curves\">No training curves: the run has no metrics.jsonl.</p>",
        ),
    }
    body.push_str("</div><h2>Concepts</h2>");
    if let Some(&last) = a.stats.explained_variance_per_step.last() {
        let _ = write!(
            body,
            "<p class=\"note\">Explained variance on these {} rows (SAEBench's definition: 1 - \
             &Sigma;&#8214;x - x&#770;&#8214;&sup2; / &Sigma;&#8214;x - &mu;&#8214;&sup2;, per-dimension mean \
             &mu;): <b id=\"explained-variance\">{last:.4}</b></p>",
            a.stats.rows
        );
    }
    body.push_str("<div class=\"charts\">");
    let ev: Vec<(f64, f64)> =
        a.stats.explained_variance_per_step.iter().enumerate().map(|(t, &v)| ((t + 1) as f64, v)).collect();
    body.push_str(&line_chart(
        "explained variance after each pursuit step",
        "step",
        "explained variance",
        &[Series { name: "EV".into(), points: ev }],
        420.0,
        220.0,
    ));
    // Frequency histogram on a log scale: bins of log10(frequency), and the dead.
    let mut bins = vec![0f64; 13];
    for s in &a.stats.concepts {
        let f = s.frequency(n);
        let b = if f == 0.0 {
            0
        } else {
            (1 + ((f.log10() + 6.0) * 2.0).floor().clamp(0.0, 11.0) as usize).min(12)
        };
        bins[b] += 1.0;
    }
    let labels: Vec<String> = std::iter::once("never".to_string())
        .chain((0..12).map(|b| format!("1e{:.1}", -6.0 + b as f64 / 2.0)))
        .collect();
    body.push_str(&bar_chart(
        "concept frequency (share of rows, log bins)",
        "frequency",
        "concepts",
        &labels,
        &bins,
        true,
        420.0,
        220.0,
    ));
    body.push_str("</div>");
    let _ = write!(
        body,
        "<div class=\"controls\"><label>Token <input id=\"search\" placeholder=\"search a token\" autocomplete=\"off\"></label>\
         <label>Filter <input id=\"filter\" placeholder=\"concept # or top token\" autocomplete=\"off\"></label></div><div id=\"results\"></div>\
         <table id=\"concepts\"><thead><tr><th>concept</th><th>frequency</th><th>mean |value|</th><th>positive</th><th>mean step</th><th>top {}</th></tr></thead><tbody></tbody></table>\
         <script src=\"data.js\"></script><script src=\"table.js\"></script>",
        if a.tokens.as_ref().is_some_and(|t| t.is_images()) { "images" } else { "tokens" }
    );
    let header = format!(
        "<h1>{}</h1><div class=\"stats\">{c} concepts · d = {d} · k = {k} · {n} rows</div>",
        esc(title)
    );
    save("index.html", &page(title, "", &header, &body))?;

    // Image folder: the images shown are copied next to the pages, once each.
    let image_rows = image_rows(a);
    let mut copied: HashMap<String, Option<String>> = HashMap::new();
    if let (Some(dir), Some(t)) = (images, &a.tokens) {
        for s in &a.stats.concepts {
            for i in s.top.iter().map(|e| e.1).chain(s.quantiles.iter().map(|q| q.2)) {
                if let Some(RowInfo::Patch { image, .. }) = t.rows.get(i) {
                    copied.entry(image.clone()).or_insert_with(|| {
                        let dst_name = image.replace(['/', '\\'], "_");
                        std::fs::create_dir_all(out.join("images")).ok()?;
                        std::fs::copy(dir.join(image), out.join("images").join(&dst_name)).ok()?;
                        Some(format!("images/{dst_name}"))
                    });
                }
            }
        }
    }
    // The concept pages: one page, concept.html#N, filled from shards of SHARD concepts each
    // (shards/K.js, loaded as scripts so the site opens from the file system); a dead concept is
    // listed in the index but has no entry (its page says so).
    use rayon::prelude::*;
    let shards: Vec<usize> = (0..c.div_ceil(SHARD)).collect();
    shards
        .par_iter()
        .try_for_each(|&k| -> Result<()> {
            let mut entries = serde_json::Map::new();
            for j in k * SHARD..((k + 1) * SHARD).min(c) {
                let s = &a.stats.concepts[j];
                if s.top.is_empty() {
                    continue;
                }
                let body = concept_body(a, j, s, &image_rows, &copied, &concept_labels);
                let header = format!(
                    "<a href=\"index.html\">← all concepts</a> <h1>Concept #{j}: {}</h1><div class=\"stats\">frequency {:.5} · mean |value| {:.4} · positive {:.0}% · mean step {:.2} · {} picks</div>",
                    esc(&concept_labels[j]),
                    s.frequency(n),
                    s.mean_abs(),
                    100.0 * s.positive_share(),
                    s.mean_step(),
                    s.picks,
                );
                entries.insert(j.to_string(), serde_json::json!([header, body]));
            }
            let text = format!("mpsaeShard({k}, {});\n", js(&serde_json::Value::Object(entries)));
            save(&format!("shards/{k}.js"), &text)
        })?;
    save(
        "concept.html",
        &page(
            &format!("{title}: concept"),
            "",
            "<a href=\"index.html\">← all concepts</a> <h1 id=\"title\">Concept</h1><div class=\"stats\" id=\"stats\"></div>",
            &format!(
                "<div id=\"concept\"><p class=\"note\">loading...</p></div>\
                 <script>const SHARD = {SHARD}; const CONCEPTS_TOTAL = {c}; const TITLE = {};</script>\
                 <script src=\"concept.js\"></script>",
                js(&serde_json::Value::String(title.to_string()))
            ),
        ),
    )?;
    save("concept.js", CONCEPT_SCRIPT)?;
    Ok(())
}

/// For image patches: each image's rows, by (patch row, patch column).
fn image_rows(a: &Analysis) -> HashMap<String, Vec<(u32, u32, usize)>> {
    let mut m: HashMap<String, Vec<(u32, u32, usize)>> = HashMap::new();
    if let Some(t) = &a.tokens {
        for (i, r) in t.rows.iter().enumerate() {
            if let RowInfo::Patch { image, row, col } = r {
                m.entry(image.clone()).or_default().push((*row, *col, i));
            }
        }
    }
    m
}

/// One example row of concept `j`: its token in context, shaded by the concept's value.
fn text_example(a: &Analysis, j: usize, i: usize, value: f32, radius: usize, scale: f32) -> String {
    let t = a.tokens.as_ref().expect("text examples need tokens");
    let mut s = format!("<div class=\"ex\"><span class=\"v\">{value:+.3}</span> ");
    for (n, r) in t.context(i, radius).into_iter().enumerate() {
        let v = a.stats.code(r, j);
        let (text, space) = t.display(r);
        if space && n > 0 {
            s.push(' ');
        }
        let text = esc(&text);
        if v == 0.0 && r != i {
            s.push_str(&text);
            continue;
        }
        let alpha = (v.abs() / scale).min(1.0) * 0.8;
        let class = if v < 0.0 { "neg" } else { "pos" };
        let hit = if r == i { " hit" } else { "" };
        let _ = write!(
            s,
            "<span class=\"tok {class}{hit}\" style=\"--a:{alpha:.2}\" title=\"{v:+.4}\">{text}</span>"
        );
    }
    s.push_str("</div>");
    s
}

/// One example of concept `j` on an image: its patch grid shaded by the concept's values, the
/// example's patch outlined, and the image with the patch marked when the image is at hand.
fn image_example(
    a: &Analysis,
    j: usize,
    i: usize,
    value: f32,
    scale: f32,
    image_rows: &HashMap<String, Vec<(u32, u32, usize)>>,
    copied: &HashMap<String, Option<String>>,
) -> String {
    let Some(RowInfo::Patch { image, row, col }) = a.tokens.as_ref().and_then(|t| t.rows.get(i)) else {
        return String::new();
    };
    let patches = &image_rows[image];
    let g = patches.iter().map(|p| p.0.max(p.1) + 1).max().unwrap_or(1) as f64;
    let cell = 160.0 / g;
    let mut svg =
        format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"160\" height=\"160\" class=\"grid\">");
    for &(r, c, ri) in patches {
        let v = a.stats.code(ri, j);
        let alpha = (v.abs() / scale).min(1.0) * 0.9;
        let colour = if v < 0.0 { "220,38,38" } else { "37,99,235" };
        let _ = write!(svg, "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{cell:.1}\" height=\"{cell:.1}\" fill=\"rgba({colour},{alpha:.2})\" stroke=\"#e5e7eb\" stroke-width=\"0.5\"/>", c as f64 * cell, r as f64 * cell);
    }
    let _ = write!(svg, "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{cell:.1}\" height=\"{cell:.1}\" fill=\"none\" stroke=\"#facc15\" stroke-width=\"2\"/></svg>", *col as f64 * cell, *row as f64 * cell);
    let crop = copied.get(image).cloned().flatten().map_or(String::new(), |src| {
        format!(
            "<span class=\"crop\"><img src=\"{}\" alt=\"{}\"><span class=\"mark\" style=\"left:{:.1}px;top:{:.1}px;width:{cell:.1}px;height:{cell:.1}px\"></span></span>",
            esc(&src),
            esc(image),
            *col as f64 * cell,
            *row as f64 * cell
        )
    });
    format!("<div class=\"img\">{svg}{crop}<br>{} [{row},{col}] {value:+.3}</div>", esc(image))
}

fn concept_body(
    a: &Analysis,
    j: usize,
    s: &Concept,
    image_rows: &HashMap<String, Vec<(u32, u32, usize)>>,
    copied: &HashMap<String, Option<String>>,
    concept_labels: &[String],
) -> String {
    let mut b = String::new();
    let scale = s.top.first().map_or(1.0, |t| t.0.abs()).max(1e-9);
    let images = a.tokens.as_ref().is_some_and(|t| t.is_images());
    let example = |i: usize, v: f32| -> String {
        match &a.tokens {
            Some(_) if images => image_example(a, j, i, v, scale, image_rows, copied),
            Some(_) => text_example(a, j, i, v, 8, scale),
            None => format!("<div class=\"ex\"><span class=\"v\">{v:+.3}</span> row {i}</div>"),
        }
    };
    b.push_str("<h2>Top activations</h2><div id=\"top\">");
    if s.top.is_empty() {
        b.push_str("<p class=\"note\">This concept never fires on these rows (dead).</p>");
    }
    // For images, one example per image.
    let mut shown_images: Vec<String> = Vec::new();
    for &(v, i) in &s.top {
        if images {
            let Some(RowInfo::Patch { image, .. }) = a.tokens.as_ref().and_then(|t| t.rows.get(i)) else {
                continue;
            };
            if shown_images.contains(image) {
                continue;
            }
            shown_images.push(image.clone());
        }
        b.push_str(&example(i, v));
    }
    b.push_str("</div><h2>Samples across its activations</h2><div id=\"quantiles\">");
    for &(q, v, i) in &s.quantiles {
        let _ = write!(b, "<div class=\"note\">quantile {q:.2}</div>");
        b.push_str(&example(i, v));
    }
    b.push_str("</div><h2>Distribution</h2><div class=\"charts\">");
    let side = LOG_BINS + 2;
    let edge = |bi: usize| 10f64.powf(LOG_MIN + (bi as f64) * (LOG_MAX - LOG_MIN) / LOG_BINS as f64);
    let labels: Vec<String> = (0..2 * side)
        .map(|bin| {
            let (neg, bi) = if bin < side { (true, side - 1 - bin) } else { (false, bin - side) };
            let x = if bi == 0 { 0.0 } else { edge(bi - 1) };
            format!(
                "{}{}",
                if neg { "-" } else { "+" },
                if bi == side - 1 { format!(">{:.0e}", edge(LOG_BINS)) } else { format!("{x:.0e}") }
            )
        })
        .collect();
    debug_assert_eq!(value_bin(1.0), side + 1 + (LOG_BINS as f64 * 3.0 / 5.0) as usize);
    let hist: Vec<f64> = s.histogram.iter().map(|&c| c as f64).collect();
    b.push_str(&bar_chart(
        "activation histogram (log |value| bins, by sign)",
        "value",
        "rows",
        &labels,
        &hist,
        true,
        520.0,
        220.0,
    ));
    let steps: Vec<String> = (1..=s.steps.len()).map(|t| t.to_string()).collect();
    let counts: Vec<f64> = s.steps.iter().map(|&c| c as f64).collect();
    b.push_str(&bar_chart(
        "pursuit step of its picks",
        "step",
        "picks",
        &steps,
        &counts,
        false,
        320.0,
        220.0,
    ));
    b.push_str("</div>");
    let links = |title: &str, id: &str, v: &[(u32, String)]| -> String {
        let mut s = format!("<h2>{title}</h2><div class=\"rel\" id=\"{id}\">");
        if v.is_empty() {
            s.push_str("<span class=\"note\">none</span>");
        }
        for (a, note) in v {
            let label = concept_labels.get(*a as usize).map(String::as_str).unwrap_or("");
            let _ = write!(
                s,
                "<a href=\"concept.html#{a}\" title=\"{}\">#{a} <span class=\"lbl\">{}</span></a><span class=\"note\">{note}</span> ",
                esc(label),
                esc(label)
            );
        }
        s.push_str("</div>");
        s
    };
    let count = |v: &[(u32, u64)]| v.iter().map(|&(a, n)| (a, format!("({n})"))).collect::<Vec<_>>();
    b.push_str(&links("Parents: picked just before it", "parents", &count(&s.parents)));
    b.push_str(&links("Children: picked just after it", "children", &count(&s.children)));
    let near: Vec<(u32, String)> = a.nearest[j].iter().map(|&(a, c)| (a, format!("({c:.3})"))).collect();
    b.push_str(&links("Nearest atoms (cosine)", "nearest", &near));
    if let Some(cmp) = &a.comparison {
        let _ = write!(b, "<h2>In {}</h2><div class=\"rel\" id=\"match\">", esc(&cmp.other));
        match &cmp.matched[j] {
            Some(m) => {
                let _ = write!(b, "one-to-one match: atom #{} (cosine {:.3})", m.atom, m.cosine);
            }
            None => {
                b.push_str("<span class=\"note\">no one-to-one match (the other run has fewer atoms)</span>")
            }
        }
        let best = &cmp.best[j];
        let _ = write!(
            b,
            "; best match: atom #{} (cosine {:.3}) <span class=\"note\">(run MCC {:.3})</span></div>",
            best.atom, best.cosine, cmp.mcc
        );
    }
    if let Some(lens) = &a.logit_lens {
        let model = lens.model.as_deref().map(|m| format!(" of {}", esc(m))).unwrap_or_default();
        let _ = write!(b, "<h2>Through the unembedding{model}</h2><div class=\"charts\" id=\"logits\">");
        for (title, id, list) in
            [("promotes", "promoted", &lens.promoted[j]), ("suppresses", "suppressed", &lens.suppressed[j])]
        {
            let _ = write!(b, "<div><h3>{title}</h3><table id=\"{id}\"><tbody>");
            for (tok, v) in list {
                let _ = write!(b, "<tr><td class=\"tok\">{}</td><td>{v:+.3}</td></tr>", esc(&label_of(tok)));
            }
            b.push_str("</tbody></table></div>");
        }
        b.push_str("</div>");
    }
    b
}
