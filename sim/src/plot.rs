//! An SVG of the convergence curve: how many nodes hold each package over time.

use std::fmt::Write;

/// `curves`: (label, sorted times at which each node got it, nodes expected).
pub fn svg(title: &str, curves: &[(String, Vec<f64>, usize)], duration: f64) -> String {
    let (w, h, pad) = (720.0, 360.0, 50.0);
    let max_n = curves.iter().map(|c| c.2).max().unwrap_or(1).max(1) as f64;
    let t_max = duration.max(0.001);
    let x = |t: f64| pad + (t / t_max) * (w - 2.0 * pad);
    let y = |n: f64| h - pad - (n / max_n) * (h - 2.0 * pad);
    let colors = [
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
    ];
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{pad}" y="20">{}</text>"#,
        escape(title)
    );
    let _ = writeln!(
        out,
        r#"<line x1="{pad}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
        h - pad,
        w - pad,
        h - pad
    );
    let _ = writeln!(
        out,
        r#"<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{}" stroke="black"/>"#,
        h - pad
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}">{t_max:.1} s</text><text x="5" y="{}">{max_n}</text>"#,
        w - pad - 20.0,
        h - pad + 18.0,
        pad + 4.0
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}">seconds</text><text x="5" y="{}">nodes</text>"#,
        w / 2.0,
        h - 10.0,
        h / 2.0
    );
    for (i, (label, times, _)) in curves.iter().enumerate() {
        let color = colors[i % colors.len()];
        let mut points = format!("{:.1},{:.1}", x(0.0), y(0.0));
        for (k, t) in times.iter().enumerate() {
            let _ = write!(
                points,
                " {:.1},{:.1} {:.1},{:.1}",
                x(*t),
                y(k as f64),
                x(*t),
                y(k as f64 + 1.0)
            );
        }
        let _ = write!(points, " {:.1},{:.1}", x(t_max), y(times.len() as f64));
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>"#
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" fill="{color}">{}</text>"#,
            w - pad - 200.0,
            pad + 15.0 * i as f64,
            escape(label)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
