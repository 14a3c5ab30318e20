//! The HTML report: one self-contained page (inline SVG drawn with plotters, no script,
//! no outside resources), viewable offline. Several results on one page share charts,
//! one line per system, which is how the benchmark script compares Tern with NATS.
//!
//! Charts: send→delivered latency percentiles over time, throughput over time, the
//! latency distribution (percentile spectrum), send→ack over time where there are
//! acks, login latency for `connect`, and p99 against rate for `ramp`. A chart that
//! fails to draw becomes a note on the page; rendering never fails a run.

use std::fmt::Write as _;

use plotters::prelude::*;

use crate::harness::coord::hist;
use crate::harness::report::{fmt_us, RunResult};

const W: u32 = 960;
const H: u32 = 380;
const PALETTE: [RGBColor; 9] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(23, 190, 207),
];

/// One line of a chart.
struct Line {
    name: String,
    points: Vec<(f64, f64)>,
}

#[derive(Clone, Copy)]
enum YScale {
    Linear,
    Log,
}

/// Draws lines into an SVG string.
fn chart(title: &str, x_label: &str, y_label: &str, lines: &[Line], y: YScale, x_log_percentile: bool) -> String {
    let mut svg = String::new();
    let res = draw(&mut svg, title, x_label, y_label, lines, y, x_log_percentile);
    match res {
        Ok(()) => svg,
        Err(e) => format!("<p class=\"note\">chart {title:?} could not be drawn: {}</p>", escape(&e)),
    }
}

fn draw(
    svg: &mut String,
    title: &str,
    x_label: &str,
    y_label: &str,
    lines: &[Line],
    y: YScale,
    x_log_percentile: bool,
) -> Result<(), String> {
    let pts = || lines.iter().flat_map(|l| l.points.iter());
    if pts().next().is_none() {
        return Err("no data".into());
    }
    let x_max = pts().map(|p| p.0).fold(f64::MIN, f64::max);
    let x_min = pts().map(|p| p.0).fold(f64::MAX, f64::min);
    let y_max = pts().map(|p| p.1).fold(f64::MIN, f64::max).max(1e-9);
    let y_min_pos = pts().map(|p| p.1).filter(|v| *v > 0.0).fold(f64::MAX, f64::min);
    let x_range = if x_max > x_min { x_min..x_max } else { x_min..x_min + 1.0 };
    let root = SVGBackend::with_string(svg, (W, H)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut builder = ChartBuilder::on(&root);
    builder.caption(title, ("sans-serif", 18)).margin(12).x_label_area_size(40).y_label_area_size(70);
    macro_rules! finish {
        ($chart:expr) => {{
            let mut c = $chart;
            let mut mesh = c.configure_mesh();
            mesh.x_desc(x_label).y_desc(y_label).light_line_style(RGBColor(235, 235, 235));
            if x_log_percentile {
                mesh.x_label_formatter(&|x| percentile_label(*x));
            }
            mesh.draw().map_err(|e| e.to_string())?;
            for (k, l) in lines.iter().enumerate() {
                let color = PALETTE[k % PALETTE.len()];
                c.draw_series(LineSeries::new(
                    l.points.iter().copied().filter(|p| p.1 > 0.0 || matches!(y, YScale::Linear)),
                    color.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?
                .label(l.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
            }
            c.configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperLeft)
                .draw()
                .map_err(|e| e.to_string())?;
        }};
    }
    match (y, x_log_percentile) {
        (YScale::Log, true) => {
            let lo = if y_min_pos.is_finite() && y_min_pos < y_max { y_min_pos * 0.8 } else { y_max / 10.0 };
            let xr = (x_range.start.max(1.0))..(x_range.end.max(10.0));
            finish!(builder
                .build_cartesian_2d(xr.log_scale(), (lo..y_max * 1.25).log_scale())
                .map_err(|e| e.to_string())?)
        }
        (YScale::Log, false) => {
            let lo = if y_min_pos.is_finite() && y_min_pos < y_max { y_min_pos * 0.8 } else { y_max / 10.0 };
            finish!(builder.build_cartesian_2d(x_range, (lo..y_max * 1.25).log_scale()).map_err(|e| e.to_string())?)
        }
        (YScale::Linear, _) => {
            finish!(builder.build_cartesian_2d(x_range, 0.0..y_max * 1.1).map_err(|e| e.to_string())?)
        }
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

/// x = 1/(1−q) → "99.9%".
fn percentile_label(x: f64) -> String {
    if x <= 1.0 {
        return "0%".into();
    }
    let q = 100.0 * (1.0 - 1.0 / x);
    let digits = if q < 99.0 { 0 } else { ((x / 100.0).log10().ceil().max(0.0)) as usize };
    format!("{q:.digits$}%")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn ms(us: u64) -> f64 {
    us as f64 / 1e3
}

/// The page for `results` (one or several systems).
pub fn render(title: &str, results: &[RunResult]) -> String {
    let mut body = String::new();
    let _ = write!(body, "<h1>{}</h1>", escape(title));
    for r in results {
        let _ =
            write!(body, "<h2>{} — {}</h2><pre>{}</pre>", escape(&r.scenario), escape(&r.target), escape(&r.summary()));
    }
    let p2p: Vec<(&str, &crate::harness::report::P2pResult)> =
        results.iter().filter_map(|r| r.p2p.as_ref().map(|p| (r.target.as_str(), p))).collect();
    if !p2p.is_empty() {
        let multi = p2p.len() > 1;
        let mut lat = Vec::new();
        let mut thr = Vec::new();
        let mut dist = Vec::new();
        let mut ack = Vec::new();
        for (name, p) in &p2p {
            let label = |what: &str| if multi { format!("{name} {what}") } else { what.to_owned() };
            for (what, f) in [
                ("p50", (|x: &crate::harness::report::SeriesPoint| x.delivery.p50_us) as fn(&_) -> u64),
                ("p99", |x| x.delivery.p99_us),
                ("p99.9", |x| x.delivery.p999_us),
                ("max", |x| x.delivery.max_us),
            ] {
                if multi && what == "max" {
                    continue;
                }
                lat.push(Line {
                    name: label(what),
                    points: p.series.iter().filter(|s| s.delivered > 0).map(|s| (f64::from(s.t_s), ms(f(s)))).collect(),
                });
            }
            thr.push(Line {
                name: label("delivered/s"),
                points: p.series.iter().map(|s| (f64::from(s.t_s), s.delivered as f64)).collect(),
            });
            thr.push(Line {
                name: label("sent/s"),
                points: p.series.iter().map(|s| (f64::from(s.t_s), s.sent as f64)).collect(),
            });
            if let Ok(h) = hist(&p.delivery_hist) {
                dist.push(spectrum_line(label("send→delivered"), &h));
            }
            if let Ok(h) = hist(&p.ack_hist) {
                if !h.is_empty() {
                    dist.push(spectrum_line(label("send→ack"), &h));
                    ack.push(Line {
                        name: label("ack p99"),
                        points: p
                            .series
                            .iter()
                            .filter(|s| s.acked > 0)
                            .map(|s| (f64::from(s.t_s), ms(s.ack.p99_us)))
                            .collect(),
                    });
                    ack.push(Line {
                        name: label("ack p50"),
                        points: p
                            .series
                            .iter()
                            .filter(|s| s.acked > 0)
                            .map(|s| (f64::from(s.t_s), ms(s.ack.p50_us)))
                            .collect(),
                    });
                }
            }
        }
        body.push_str(&chart(
            "send→delivered latency over time",
            "seconds since start",
            "ms",
            &lat,
            YScale::Log,
            false,
        ));
        body.push_str(&chart("throughput over time", "seconds since start", "messages/s", &thr, YScale::Linear, false));
        body.push_str(&chart("latency distribution", "percentile", "ms", &dist, YScale::Log, true));
        if !ack.is_empty() {
            body.push_str(&chart("send→ack latency over time", "seconds since start", "ms", &ack, YScale::Log, false));
        }
    }
    let logins: Vec<Line> = results
        .iter()
        .filter_map(|r| {
            let c = r.connect.as_ref()?;
            let h = hist(&c.login_hist).ok()?;
            Some(spectrum_line(format!("{} login", r.target), &h))
        })
        .collect();
    if !logins.is_empty() {
        body.push_str(&chart("login latency distribution", "percentile", "ms", &logins, YScale::Log, true));
    }
    for r in results {
        if let Some(ramp) = &r.ramp {
            let lines = vec![
                Line { name: "p99".into(), points: ramp.steps.iter().map(|s| (s.rate, ms(s.p99_us))).collect() },
                Line { name: "p50".into(), points: ramp.steps.iter().map(|s| (s.rate, ms(s.p50_us))).collect() },
                Line {
                    name: "bound".into(),
                    points: ramp.steps.iter().map(|s| (s.rate, ms(ramp.p99_bound_us))).collect(),
                },
            ];
            body.push_str(&chart(
                &format!("{}: latency against offered rate", r.target),
                "messages/s",
                "ms",
                &lines,
                YScale::Log,
                false,
            ));
            let _ = write!(
                body,
                "<p>Best sustained rate: <b>{}</b> (p99 bound {})</p>",
                ramp.best_rate.map_or("none".into(), |b| format!("{b:.0} msgs/s")),
                fmt_us(ramp.p99_bound_us)
            );
        }
    }
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title><style>\
         body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}}\
         pre{{background:#f6f6f6;padding:1em;overflow-x:auto}} svg{{display:block;margin:1em 0}}\
         .note{{color:#a00}}</style></head><body>{body}</body></html>\n",
        escape(title)
    )
}

fn spectrum_line(name: String, h: &crate::harness::hist::Latency) -> Line {
    let points = h.spectrum().into_iter().filter(|(q, _)| *q < 1.0).map(|(q, v)| (1.0 / (1.0 - q), ms(v))).collect();
    Line { name, points }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::hist::Latency;
    use crate::harness::report::{P2pResult, SeriesPoint};

    #[test]
    fn percentile_axis_labels() {
        assert_eq!(percentile_label(2.0), "50%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(100.0), "99%");
        assert_eq!(percentile_label(1000.0), "99.9%");
        assert_eq!(percentile_label(10_000.0), "99.99%");
    }

    #[test]
    fn renders_a_self_contained_page_with_charts() {
        let mut h = Latency::new();
        for v in 1..2000 {
            h.record(v * 3);
        }
        let series = (1..=5)
            .map(|t| SeriesPoint {
                t_s: t,
                sent: 100,
                acked: 100,
                delivered: 200,
                delivery: h.summary(),
                ack: h.summary(),
                ..Default::default()
            })
            .collect();
        let p =
            P2pResult { series, delivery_hist: h.to_data(), ack_hist: h.to_data(), acked: 500, ..Default::default() };
        let r = RunResult {
            scenario: "p2p".into(),
            target: "tern".into(),
            started_unix: 0,
            config: serde_json::Value::Null,
            connect: None,
            p2p: Some(p),
            sync: None,
            ramp: None,
            group: None,
        };
        let page = render("t <&>", &[r.clone(), RunResult { target: "nats_core".into(), ..r }]);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("t &lt;&amp;&gt;"));
        assert_eq!(page.matches("<svg").count(), 4, "latency, throughput, distribution, ack");
        assert!(!page.contains("could not be drawn"), "{page}");
        assert!(!page.contains("http://") || page.matches("http://").all(|_| page.contains("xmlns")));
        assert!(page.contains("nats_core p99"));
    }

    #[test]
    fn empty_data_is_a_note_not_a_failure() {
        let s = chart("x", "a", "b", &[Line { name: "n".into(), points: vec![] }], YScale::Log, false);
        assert!(s.contains("could not be drawn: no data"));
    }
}
