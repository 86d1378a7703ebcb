//! The HTML report: one self-contained page (no scripts, no external
//! resources) with inline SVG plots per workload: throughput over time,
//! latency (p50 and p99) over time, and the latency percentile spectrum of
//! each target, beside the tables and ratios.

use std::fmt::Write as _;

use super::report::{RunReport, SpectrumPoint, WorkloadReport};

/// Series colours, one per target (colour-blind-safe Okabe-Ito palette).
const COLOURS: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000",
];

const W: f64 = 560.0;
const H: f64 = 300.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
/// Top of the plot area with one legend row; each further row adds [`ROW`].
const TOP: f64 = 44.0;
/// Height of a legend row.
const ROW: f64 = 14.0;
const BOTTOM: f64 = 44.0;

/// Escapes text for HTML and SVG.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// One line on a chart.
pub struct Series {
    /// Legend text.
    pub label: String,
    /// Stroke colour.
    pub colour: &'static str,
    /// Dashed (a secondary series, e.g. p50 beside p99).
    pub dashed: bool,
    /// Points (x, y) in data units.
    pub points: Vec<(f64, f64)>,
}

/// How the x axis is labelled.
#[derive(Clone, Copy)]
pub enum XAxis {
    /// Linear, labelled with the value and this unit.
    Linear(&'static str),
    /// Percentile spectrum: x = -log10(1 - p/100), labelled 0%, 90%, 99%, ...
    Percentile,
}

/// A "nice" step (1, 2 or 5 times a power of ten) giving about `n` ticks over `span`.
fn nice_step(span: f64, n: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / n;
    let p = 10f64.powf(raw.log10().floor());
    let m = raw / p;
    let f = if m < 1.5 {
        1.0
    } else if m < 3.5 {
        2.0
    } else if m < 7.5 {
        5.0
    } else {
        10.0
    };
    f * p
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 10_000.0 {
        return format!("{:.0}k", v / 1000.0);
    }
    // At most three decimals, trailing zeros dropped: 0.5, 2, 0.025.
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

/// Legend entry width in px (about 6.5 px per character at 11 px).
fn legend_width(label: &str) -> f64 {
    28.0 + 6.5 * label.chars().count() as f64
}

/// Renders a line chart as an inline SVG element.
pub fn chart(title: &str, y_label: &str, x_axis: XAxis, series: &[Series]) -> String {
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut x_max, mut y_max) = (0.0f64, 0.0f64);
    let mut x_min = f64::INFINITY;
    for &(x, y) in pts {
        if x.is_finite() && y.is_finite() {
            x_max = x_max.max(x);
            x_min = x_min.min(x);
            y_max = y_max.max(y);
        }
    }
    if !x_min.is_finite() {
        x_min = 0.0;
    }
    let x_min = match x_axis {
        XAxis::Linear(_) => x_min.min(0.0),
        XAxis::Percentile => 0.0,
    };
    if x_max <= x_min {
        x_max = x_min + 1.0;
    }
    // Legend rows: entries wrap at the right edge.
    let mut rows = 1.0f64;
    let mut lx = LEFT;
    for ser in series.iter().filter(|s| !s.points.is_empty()) {
        if lx + legend_width(&ser.label) > W - RIGHT && lx > LEFT {
            rows += 1.0;
            lx = LEFT;
        }
        lx += legend_width(&ser.label);
    }
    let top = TOP + (rows - 1.0) * ROW;
    let y_step = nice_step(y_max.max(1e-3), 5.0);
    let y_top = (y_max / y_step).ceil().max(1.0) * y_step;
    let pw = W - LEFT - RIGHT;
    let ph = H - top - BOTTOM;
    let sx = |x: f64| LEFT + (x - x_min) / (x_max - x_min) * pw;
    let sy = |y: f64| top + ph - (y / y_top).clamp(0.0, 1.0) * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{t}\">\
         <rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"#ffffff\"/>\
         <text x=\"{LEFT}\" y=\"18\" font-size=\"14\" font-weight=\"bold\" fill=\"#222\">{t}</text>",
        t = esc(title)
    );
    // Horizontal grid and y labels.
    let mut y = 0.0;
    while y <= y_top + y_step / 2.0 {
        let py = sy(y);
        let _ = write!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#e4e4e4\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#444\">{}</text>",
            W - RIGHT,
            LEFT - 6.0,
            py + 4.0,
            fmt_num(y)
        );
        y += y_step;
    }
    // X ticks.
    match x_axis {
        XAxis::Linear(unit) => {
            let step = nice_step(x_max - x_min, 6.0);
            let mut x = (x_min / step).ceil() * step;
            while x <= x_max + step / 1e6 {
                let px = sx(x);
                let _ = write!(
                    s,
                    "<line x1=\"{px:.1}\" y1=\"{:.1}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#888\"/>\
                     <text x=\"{px:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#444\">{}</text>",
                    top + ph,
                    top + ph + 4.0,
                    top + ph + 16.0,
                    fmt_num(x)
                );
                x += step;
            }
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#444\">{}</text>",
                LEFT + pw / 2.0,
                H - 8.0,
                esc(unit)
            );
        }
        XAxis::Percentile => {
            for (k, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"].iter().enumerate() {
                let x = k as f64;
                if x > x_max + 1e-9 {
                    break;
                }
                let px = sx(x);
                let _ = write!(
                    s,
                    "<line x1=\"{px:.1}\" y1=\"{top:.1}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#eeeeee\"/>\
                     <text x=\"{px:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#444\">{label}</text>",
                    top + ph,
                    top + ph + 16.0,
                );
            }
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#444\">percentile (log scale of 1/(1-p); the last point is the maximum)</text>",
                LEFT + pw / 2.0,
                H - 8.0
            );
        }
    }
    // Axes and the y label.
    let _ = write!(
        s,
        "<line x1=\"{LEFT}\" y1=\"{top:.1}\" x2=\"{LEFT}\" y2=\"{:.1}\" stroke=\"#444\"/>\
         <line x1=\"{LEFT}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#444\"/>\
         <text transform=\"translate(14 {:.1}) rotate(-90)\" font-size=\"11\" text-anchor=\"middle\" fill=\"#444\">{}</text>",
        top + ph,
        top + ph,
        W - RIGHT,
        top + ph,
        top + ph / 2.0,
        esc(y_label)
    );
    // Series and legend.
    let (mut legend_x, mut legend_y) = (LEFT, 32.0);
    for ser in series {
        let points: Vec<String> = ser
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        if points.is_empty() {
            continue;
        }
        let dash = if ser.dashed { " stroke-dasharray=\"5 4\"" } else { "" };
        let _ = write!(
            s,
            "<polyline class=\"series\" fill=\"none\" stroke=\"{c}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
            points.join(" "),
            c = ser.colour
        );
        if points.len() <= 2 {
            for p in &points {
                let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
                let _ = write!(s, "<circle cx=\"{x}\" cy=\"{y}\" r=\"3\" fill=\"{}\"/>", ser.colour);
            }
        }
        if legend_x + legend_width(&ser.label) > W - RIGHT && legend_x > LEFT {
            legend_x = LEFT;
            legend_y += ROW;
        }
        let _ = write!(
            s,
            "<line x1=\"{legend_x:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{c}\" stroke-width=\"2\"{dash}/>\
             <text x=\"{:.1}\" y=\"{legend_y:.1}\" font-size=\"11\" fill=\"#222\">{}</text>",
            legend_y - 4.0,
            legend_x + 16.0,
            legend_y - 4.0,
            legend_x + 20.0,
            esc(&ser.label),
            c = ser.colour
        );
        legend_x += legend_width(&ser.label);
    }
    s.push_str("</svg>");
    s
}

/// The x position of a spectrum point (see [`XAxis::Percentile`]); the
/// maximum (100%) is placed half a decade right of the point before it.
fn spectrum_points(sp: &[SpectrumPoint]) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(sp.len());
    for p in sp {
        let x = if p.percentile >= 100.0 {
            out.last().map_or(0.0, |l| l.0) + 0.5
        } else {
            -(1.0 - p.percentile / 100.0).log10()
        };
        out.push((x, p.ms));
    }
    out
}

fn workload_section(r: &RunReport, name: &str, out: &mut String) {
    let rows: Vec<(usize, &str, &WorkloadReport)> = r
        .targets
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            t.workloads
                .iter()
                .find(|w| w.workload == name)
                .map(|w| (i, t.label.as_str(), w))
        })
        .collect();
    let Some((_, _, first)) = rows.first() else {
        return;
    };
    let _ = write!(
        out,
        "<section class=\"workload\"><h2>Workload {} <small>{}; {}; {}</small></h2>",
        esc(name),
        esc(&first.description),
        esc(&first.distribution),
        esc(&first.mode)
    );
    out.push_str(
        "<table><tr><th>target</th><th>ops/s</th><th>p50 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th><th>errors</th><th>throughput vs baseline</th><th>p99 vs baseline</th><th>scans</th></tr>",
    );
    for (_, label, w) in &rows {
        let ratio = r.ratio(name, label);
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{:.0}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(label),
            w.ops_per_s,
            w.latency.p50_ms,
            w.latency.p99_ms,
            w.latency.p999_ms,
            w.latency.max_ms,
            w.errors,
            ratio.map_or_else(|| "baseline".to_owned(), |x| format!("x{:.2}", x.throughput_ratio)),
            ratio.map_or_else(|| "baseline".to_owned(), |x| format!("x{:.2}", x.p99_ratio)),
            esc(w.scan_method.as_deref().unwrap_or("-")),
        );
    }
    out.push_str("</table><div class=\"charts\">");
    let colour = |i: usize| COLOURS[i % COLOURS.len()];
    let tput: Vec<Series> = rows
        .iter()
        .map(|(i, label, w)| Series {
            label: (*label).to_owned(),
            colour: colour(*i),
            dashed: false,
            points: w.timeline.iter().map(|p| (p.t_s, p.ops_per_s)).collect(),
        })
        .collect();
    out.push_str(&chart(
        "Throughput over time",
        "operations / s",
        XAxis::Linear("seconds after warm-up"),
        &tput,
    ));
    let mut lat = Vec::new();
    for (i, label, w) in &rows {
        lat.push(Series {
            label: format!("{label} p99"),
            colour: colour(*i),
            dashed: false,
            points: w.timeline.iter().map(|p| (p.t_s, p.p99_ms)).collect(),
        });
        lat.push(Series {
            label: format!("{label} p50"),
            colour: colour(*i),
            dashed: true,
            points: w.timeline.iter().map(|p| (p.t_s, p.p50_ms)).collect(),
        });
    }
    let from = if first.latency_from == "intended_start" {
        "ms from intended start"
    } else {
        "ms"
    };
    out.push_str(&chart(
        "Latency over time (p99 solid, p50 dashed)",
        from,
        XAxis::Linear("seconds after warm-up"),
        &lat,
    ));
    let spec: Vec<Series> = rows
        .iter()
        .map(|(i, label, w)| Series {
            label: (*label).to_owned(),
            colour: colour(*i),
            dashed: false,
            points: spectrum_points(&w.spectrum),
        })
        .collect();
    out.push_str(&chart("Latency percentile spectrum", from, XAxis::Percentile, &spec));
    out.push_str("</div>");
    for (_, label, w) in &rows {
        if let Some(e) = &w.first_error {
            let _ = write!(out, "<p class=\"err\">{}: first error: {}</p>", esc(label), esc(e));
        }
    }
    out.push_str("</section>");
}

/// The whole page.
pub fn page(r: &RunReport) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>corekv-bench report</title><style>\
         body{{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}}\
         table{{border-collapse:collapse;margin:8px 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}}\
         th{{background:#eee}}td:first-child{{text-align:left}}.charts{{display:flex;flex-wrap:wrap;gap:12px}}\
         svg.chart{{border:1px solid #ddd;background:#fff}}small{{font-weight:normal;color:#555}}.err{{color:#a00}}\
         code{{background:#eee;padding:1px 4px}}</style></head><body>\
         <h1>corekv-bench report</h1><p><code>{}</code></p>\
         <p>{} CPU(s) on {} (kernel {}), shared by the load generator and the servers it measures. \
         {} records, values {} (mean {:.0} B), {} s measured after {} s of warm-up per workload, {}; corekv consistency {}.</p>",
        esc(&r.command),
        r.machine.cpus,
        esc(&r.machine.hostname),
        esc(&r.machine.kernel),
        r.settings.records,
        esc(&r.settings.value_size),
        r.settings.mean_value_bytes,
        r.settings.duration_s,
        r.settings.warmup_s,
        if r.settings.mode == "open" {
            format!("open loop at {}/s, latency counted from each operation's intended start", r.settings.rate)
        } else {
            format!("closed loop with {} clients", r.settings.clients)
        },
        esc(&r.settings.consistency),
    );
    out.push_str("<h2>Targets</h2><table><tr><th>label</th><th>url</th><th>protocol</th><th>nodes</th><th>load: records</th><th>inserts/s</th><th>load errors</th></tr>");
    for t in &r.targets {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{}</td></tr>",
            esc(&t.label),
            esc(&t.url),
            esc(&t.protocol),
            t.nodes,
            t.load.records,
            t.load.ops_per_s,
            t.load.errors
        );
    }
    out.push_str("</table>");
    if !r.ratios.is_empty() {
        let _ = write!(
            out,
            "<h2>Ratios to {}</h2><table><tr><th>workload</th><th>target</th><th>throughput ratio (higher is better)</th><th>p99 ratio (lower is better)</th></tr>",
            esc(&r.baseline)
        );
        for x in &r.ratios {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>x{:.2}</td><td>x{:.2}</td></tr>",
                esc(&x.workload),
                esc(&x.target),
                x.throughput_ratio,
                x.p99_ratio
            );
        }
        out.push_str("</table>");
    }
    let names: Vec<String> = r
        .targets
        .first()
        .map(|t| t.workloads.iter().map(|w| w.workload.clone()).collect())
        .unwrap_or_default();
    for n in &names {
        workload_section(r, n, &mut out);
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_draws_every_series_inside_the_plot() {
        let svg = chart(
            "t <1>",
            "ms",
            XAxis::Linear("s"),
            &[
                Series {
                    label: "a".into(),
                    colour: COLOURS[0],
                    dashed: false,
                    points: vec![(1.0, 10.0), (2.0, 20.0), (3.0, 5.0)],
                },
                Series {
                    label: "b".into(),
                    colour: COLOURS[1],
                    dashed: true,
                    points: vec![(1.0, 1.0)],
                },
            ],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("t &lt;1&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("<circle"));
        // Every plotted coordinate lies in the plot area.
        for poly in svg.split("points=\"").skip(1) {
            let pts = poly.split('"').next().unwrap_or("");
            for p in pts.split(' ') {
                let (x, y) = p.split_once(',').unwrap_or(("-1", "-1"));
                let (x, y): (f64, f64) = (x.parse().unwrap_or(-1.0), y.parse().unwrap_or(-1.0));
                assert!(
                    (LEFT..=W - RIGHT).contains(&x) && (TOP..=H - BOTTOM).contains(&y),
                    "{p}"
                );
            }
        }
    }

    #[test]
    fn spectrum_positions_follow_the_nines() {
        let pts = spectrum_points(&[
            SpectrumPoint {
                percentile: 0.0,
                ms: 1.0,
            },
            SpectrumPoint {
                percentile: 99.0,
                ms: 2.0,
            },
            SpectrumPoint {
                percentile: 99.9,
                ms: 3.0,
            },
            SpectrumPoint {
                percentile: 100.0,
                ms: 4.0,
            },
        ]);
        assert!((pts[0].0 - 0.0).abs() < 1e-9);
        assert!((pts[1].0 - 2.0).abs() < 1e-9);
        assert!((pts[2].0 - 3.0).abs() < 1e-9);
        assert!((pts[3].0 - 3.5).abs() < 1e-9);
        assert_eq!(nice_step(97.0, 5.0), 20.0);
        assert_eq!(nice_step(0.8, 5.0), 0.2);
    }
}
