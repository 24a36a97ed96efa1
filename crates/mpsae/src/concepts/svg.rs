//! Small SVG charts (lines and bars) for the concept pages, written directly: axes with round
//! ticks, labels, one colour per series.

use std::fmt::Write;

/// Colours of the series, in order.
const COLOURS: [&str; 4] = ["#2563eb", "#dc2626", "#16a34a", "#9333ea"];

/// Escapes text for XML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Round tick values covering `[lo, hi]` (about five).
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).abs().max(1e-12);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| span / s <= 6.0).unwrap_or(10.0 * mag);
    let start = (lo / step).ceil() * step;
    (0..).map(|i| start + i as f64 * step).take_while(|v| *v <= hi + step * 1e-9).collect()
}

fn fmt(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1e4 || v.abs() < 1e-3 {
        format!("{v:.0e}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A chart frame: the plot area's mapping and the SVG text so far.
struct Frame {
    svg: String,
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
    left: f64,
    top: f64,
    w: f64,
    h: f64,
}

impl Frame {
    #[allow(clippy::too_many_arguments)]
    fn new(
        title: &str,
        width: f64,
        height: f64,
        xr: (f64, f64),
        yr: (f64, f64),
        x_label: &str,
        y_label: &str,
        x_ticks: bool,
    ) -> Frame {
        let (left, top, right, bottom) = (56.0, 26.0, 12.0, 40.0);
        let (w, h) = (width - left - right, height - top - bottom);
        let (mut x0, mut x1) = xr;
        let (mut y0, mut y1) = yr;
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        if y1 <= y0 {
            y0 -= 0.5;
            y1 += 0.5;
        }
        if !x0.is_finite() {
            (x0, x1) = (0.0, 1.0);
        }
        let mut svg = String::new();
        let _ = write!(
            svg,
            r##"<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"##
        );
        let _ = write!(
            svg,
            r##"<text x="{}" y="16" font-size="13" font-weight="bold">{}</text>"##,
            left,
            esc(title)
        );
        let f = Frame { svg, x0, x1, y0, y1, left, top, w, h };
        let mut f = f;
        let mut grid = String::new();
        for t in ticks(y0, y1) {
            let y = f.y(t);
            let _ = write!(
                grid,
                r##"<line x1="{l}" y1="{y:.1}" x2="{r}" y2="{y:.1}" stroke="#e5e7eb"/><text x="{tx}" y="{ty:.1}" text-anchor="end" fill="#374151">{}</text>"##,
                fmt(t),
                l = left,
                r = left + w,
                tx = left - 4.0,
                ty = y + 4.0
            );
        }
        for t in if x_ticks { ticks(x0, x1) } else { Vec::new() } {
            let x = f.x(t);
            let _ = write!(
                grid,
                r##"<line x1="{x:.1}" y1="{b}" x2="{x:.1}" y2="{bt}" stroke="#9ca3af"/><text x="{x:.1}" y="{ty}" text-anchor="middle" fill="#374151">{}</text>"##,
                fmt(t),
                b = top + h,
                bt = top + h + 4.0,
                ty = top + h + 16.0
            );
        }
        let _ = write!(
            grid,
            r##"<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#6b7280"/><text x="{cx}" y="{by}" text-anchor="middle" fill="#111827">{xl}</text><text x="12" y="{cy}" text-anchor="middle" fill="#111827" transform="rotate(-90 12 {cy})">{yl}</text>"##,
            cx = left + w / 2.0,
            by = height - 4.0,
            cy = top + h / 2.0,
            xl = esc(x_label),
            yl = esc(y_label)
        );
        f.svg.push_str(&grid);
        f
    }
    fn x(&self, v: f64) -> f64 {
        self.left + (v - self.x0) / (self.x1 - self.x0) * self.w
    }
    fn y(&self, v: f64) -> f64 {
        self.top + self.h - (v - self.y0) / (self.y1 - self.y0) * self.h
    }
    fn done(mut self) -> String {
        self.svg.push_str("</svg>");
        self.svg
    }
}

/// A named series of points.
pub struct Series {
    /// Legend.
    pub name: String,
    /// Points `(x, y)`.
    pub points: Vec<(f64, f64)>,
}

/// A line chart of `series` (markers on the points).
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    width: f64,
    height: f64,
) -> String {
    let all = || series.iter().flat_map(|s| s.points.iter()).filter(|p| p.0.is_finite() && p.1.is_finite());
    let (x0, x1) = all().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = all().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let (y0, y1) = if y0.is_finite() { (y0, y1) } else { (0.0, 1.0) };
    let mut f = Frame::new(title, width, height, (x0, x1), (y0, y1), x_label, y_label, true);
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let pts: Vec<String> = s
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", f.x(x), f.y(y)))
            .collect();
        let _ = write!(
            f.svg,
            r##"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"##,
            pts.join(" ")
        );
        for p in &pts {
            let (x, y) = p.split_once(',').unwrap();
            let _ = write!(f.svg, r##"<circle cx="{x}" cy="{y}" r="2.5" fill="{colour}"/>"##);
        }
        if series.len() > 1 {
            let _ = write!(
                f.svg,
                r##"<text x="{}" y="{}" fill="{colour}">{}</text>"##,
                f.left + f.w - 90.0,
                f.top + 14.0 + 13.0 * i as f64,
                esc(&s.name)
            );
        }
    }
    f.done()
}

/// A bar chart: one bar per label; `log` draws log10(1 + value).
#[allow(clippy::too_many_arguments)]
pub fn bar_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    labels: &[String],
    values: &[f64],
    log: bool,
    width: f64,
    height: f64,
) -> String {
    let shown: Vec<f64> = values.iter().map(|&v| if log { (1.0 + v.max(0.0)).log10() } else { v }).collect();
    let y1 = shown.iter().cloned().fold(0.0f64, f64::max).max(1e-9);
    let y0 = shown.iter().cloned().fold(0.0f64, f64::min);
    let n = labels.len().max(1) as f64;
    let mut f = Frame::new(
        title,
        width,
        height,
        (0.0, n),
        (y0, y1 * 1.05),
        x_label,
        if log { "log10(1 + count)" } else { y_label },
        false,
    );
    // Bars are labelled below, every few bars.
    let every = (labels.len() / 10).max(1);
    for (i, (&v, label)) in shown.iter().zip(labels).enumerate() {
        let (xa, xb) = (f.x(i as f64 + 0.1), f.x(i as f64 + 0.9));
        if i % every == 0 {
            let _ = write!(
                f.svg,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="9" fill="#6b7280">{}</text>"##,
                (xa + xb) / 2.0,
                f.top + f.h + 28.0,
                esc(label)
            );
        }
        if values[i] == 0.0 {
            continue;
        }
        let (ya, yb) = (f.y(v.max(0.0)), f.y(0f64.max(y0)));
        let _ = write!(
            f.svg,
            r##"<rect x="{xa:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {}</title></rect>"##,
            ya.min(yb),
            xb - xa,
            (yb - ya).abs(),
            COLOURS[0],
            esc(label),
            fmt(values[i])
        );
    }
    f.done()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 1.0), vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]);
        let t = ticks(3.0, 97.0);
        assert!(t.first().unwrap() >= &3.0 && t.last().unwrap() <= &97.0 && t.len() >= 4);
    }

    #[test]
    fn charts_are_svg_with_their_points() {
        let s = line_chart(
            "loss",
            "epoch",
            "loss",
            &[Series { name: "a".into(), points: vec![(1.0, 2.0), (2.0, 1.0)] }],
            300.0,
            200.0,
        );
        assert!(s.starts_with("<svg") && s.ends_with("</svg>") && s.matches("<circle").count() == 2);
        let b = bar_chart(
            "h",
            "x",
            "y",
            &["a".into(), "b".into(), "c".into()],
            &[1.0, 0.0, 3.0],
            true,
            300.0,
            200.0,
        );
        assert_eq!(b.matches("<rect x=").count(), 3, "two bars and the frame");
        assert_eq!(b.matches("font-size=\"9\"").count(), 3, "one label per bar");
    }
}
