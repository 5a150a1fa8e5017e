//! Rendering helpers of the console: HTML escaping, times, the JSON viewer, the per-minute
//! chart, pagination links. Everything here returns markup built from escaped text, so the
//! templates may print it with `|safe`.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde_json::Value;

use keel_records::MinuteCounts;

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes one path segment or query value (everything but RFC 3986's unreserved
/// characters).
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A query string from pairs, leaving out empty values.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if !v.is_empty() {
            s.append_pair(k, v);
        }
    }
    let q = s.finish();
    if q.is_empty() {
        q
    } else {
        format!("?{q}")
    }
}

/// A `<time>` element for `ms` since the epoch: UTC text without JavaScript; the script
/// rewrites it in the browser's time zone and keeps the exact timestamp in the tooltip.
pub fn time(ms: i64) -> String {
    let Some(t) = DateTime::<Utc>::from_timestamp_millis(ms) else {
        return "—".into();
    };
    format!(
        "<time datetime=\"{}\" title=\"{}\">{}</time>",
        t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        t.format("%Y-%m-%d %H:%M:%S%.3f UTC"),
        t.format("%Y-%m-%d %H:%M:%S UTC")
    )
}

/// [`time`] of an optional time in ms, or a dash.
pub fn time_of(ms: Option<i64>) -> String {
    match ms {
        Some(ms) if ms > 0 => time(ms),
        _ => "—".into(),
    }
}

/// A duration in ms as `850 ms`, `12.4 s`, `3 min 5 s`, `2 h 4 min`.
pub fn duration(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000)
    } else {
        format!("{} h {} min", ms / 3_600_000, (ms % 3_600_000) / 60_000)
    }
}

/// One line of text, shortened to `max` characters.
pub fn short(s: &str, max: usize) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() <= max {
        one
    } else {
        let mut t: String = one.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Largest JSON text the tree viewer expands; larger values are shown as text.
const TREE_LIMIT: usize = 256 * 1024;

/// The JSON viewer: nested `<details>` (collapsible without JavaScript), a copy button, and
/// the pretty text it copies. `id` must be unique on the page.
pub fn json_viewer(id: &str, v: &Value) -> String {
    let pretty = serde_json::to_string_pretty(v).unwrap_or_default();
    let mut out = String::new();
    let _ = write!(
        out,
        "<div class=\"json\"><div class=\"json-tools\"><button type=\"button\" class=\"small\" \
         data-copy=\"{id}-text\">Copy JSON</button></div>"
    );
    if pretty.len() > TREE_LIMIT {
        let _ = write!(
            out,
            "<p class=\"muted\">{} bytes: shown as text.</p><pre id=\"{id}-text\">{}</pre></div>",
            pretty.len(),
            esc(&pretty)
        );
        return out;
    }
    out.push_str("<div class=\"json-tree\">");
    tree(&mut out, None, v, 0);
    let _ = write!(
        out,
        "</div><pre id=\"{id}-text\" hidden>{}</pre></div>",
        esc(&pretty)
    );
    out
}

fn key_html(key: Option<&str>) -> String {
    key.map(|k| format!("<span class=\"json-key\">{}</span>: ", esc(k)))
        .unwrap_or_default()
}

fn tree(out: &mut String, key: Option<&str>, v: &Value, depth: usize) {
    let k = key_html(key);
    match v {
        Value::Object(m) if !m.is_empty() => {
            let open = if depth < 3 { " open" } else { "" };
            let _ = write!(
                out,
                "<details{open}><summary>{k}<span class=\"json-brace\">{{…}}</span> \
                 <span class=\"muted\">{} {}</span></summary><div class=\"json-children\">",
                m.len(),
                if m.len() == 1 { "key" } else { "keys" }
            );
            for (ck, cv) in m {
                tree(out, Some(ck), cv, depth + 1);
            }
            out.push_str("</div></details>");
        }
        Value::Array(a) if !a.is_empty() => {
            let open = if depth < 3 { " open" } else { "" };
            let _ = write!(
                out,
                "<details{open}><summary>{k}<span class=\"json-brace\">[…]</span> \
                 <span class=\"muted\">{} {}</span></summary><div class=\"json-children\">",
                a.len(),
                if a.len() == 1 { "item" } else { "items" }
            );
            for (i, cv) in a.iter().enumerate() {
                tree(out, Some(&i.to_string()), cv, depth + 1);
            }
            out.push_str("</div></details>");
        }
        scalar => {
            let (class, text) = match scalar {
                Value::String(s) => ("json-string", format!("\"{s}\"")),
                Value::Number(n) => ("json-number", n.to_string()),
                Value::Bool(b) => ("json-bool", b.to_string()),
                Value::Null => ("json-null", "null".into()),
                Value::Object(_) => ("json-brace", "{}".into()),
                Value::Array(_) => ("json-brace", "[]".into()),
            };
            let _ = write!(
                out,
                "<div class=\"json-leaf\">{k}<span class=\"{class}\">{}</span></div>",
                esc(&text)
            );
        }
    }
}

/// The completed/failed-per-minute chart as an SVG bar chart (one stacked bar per minute,
/// a tooltip per bar), or an empty string when `minutes` is empty.
pub fn chart(minutes: &[MinuteCounts]) -> String {
    if minutes.is_empty() {
        return String::new();
    }
    let max = minutes
        .iter()
        .map(|m| m.completed + m.failed)
        .max()
        .unwrap_or(0)
        .max(1);
    let (w, h, left, bottom) = (720.0_f64, 160.0_f64, 40.0_f64, 20.0_f64);
    let plot_h = h - bottom - 6.0;
    let slot = (w - left) / minutes.len() as f64;
    let bar = (slot * 0.8).max(1.0);
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"chart\" viewBox=\"0 0 {w} {h}\" role=\"img\" \
         aria-label=\"Attempts completed and failed per minute over the last {} minutes\">",
        minutes.len()
    );
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"{left}\" y1=\"{y}\" x2=\"{w}\" y2=\"{y}\"/>\
         <text class=\"axis-label\" x=\"{lx}\" y=\"12\" text-anchor=\"end\">{max}</text>\
         <text class=\"axis-label\" x=\"{lx}\" y=\"{y}\" text-anchor=\"end\">0</text>\
         <text class=\"axis-label\" x=\"{left}\" y=\"{by}\">{} min ago</text>\
         <text class=\"axis-label\" x=\"{w}\" y=\"{by}\" text-anchor=\"end\">now</text>",
        minutes.len(),
        y = h - bottom,
        lx = left - 6.0,
        by = h - 4.0,
    );
    for (i, m) in minutes.iter().enumerate() {
        let x = left + i as f64 * slot + (slot - bar) / 2.0;
        let ch = m.completed as f64 / max as f64 * plot_h;
        let fh = m.failed as f64 / max as f64 * plot_h;
        let base = h - bottom;
        let label = DateTime::<Utc>::from_timestamp_millis(m.minute)
            .map(|t| t.format("%H:%M UTC").to_string())
            .unwrap_or_default();
        let _ = write!(
            out,
            "<g class=\"bar\" data-minute=\"{}\"><title>{label}: {} completed, {} failed</title>\
             <rect class=\"hit\" x=\"{x:.1}\" y=\"6\" width=\"{bar:.1}\" height=\"{plot_h:.1}\"/>",
            m.minute, m.completed, m.failed
        );
        if m.completed > 0 {
            let _ = write!(
                out,
                "<rect class=\"completed\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{ch:.1}\"/>",
                base - ch
            );
        }
        if m.failed > 0 {
            let _ = write!(
                out,
                "<rect class=\"failed\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{fh:.1}\"/>",
                base - ch - fh
            );
        }
        out.push_str("</g>");
    }
    out.push_str("</svg>");
    out
}

/// Links of one page of a listing.
#[derive(Debug, Clone, Default)]
pub struct Pager {
    /// Page, from 1.
    pub page: usize,
    /// Pages in all (at least 1).
    pub pages: usize,
    /// Rows in all.
    pub total: u64,
    /// Link of the previous page.
    pub prev: Option<String>,
    /// Link of the next page.
    pub next: Option<String>,
    /// What the rows are (`entries`, `runs`).
    pub unit: &'static str,
}

impl Pager {
    /// `link(page)` gives the URL of a page.
    pub fn new(page: usize, limit: usize, total: u64, link: impl Fn(usize) -> String) -> Pager {
        let pages = (total as usize).div_ceil(limit.max(1)).max(1);
        Pager {
            page,
            pages,
            total,
            prev: (page > 1).then(|| link(page - 1)),
            next: (page < pages).then(|| link(page + 1)),
            unit: "rows",
        }
    }

    /// Names the rows.
    pub fn of(mut self, unit: &'static str) -> Pager {
        self.unit = unit;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(enc("a b/c:ü"), "a%20b%2Fc%3A%C3%BC");
        assert_eq!(
            query(&[("a", "1 2"), ("b", ""), ("c", "&")]),
            "?a=1+2&c=%26"
        );
        assert_eq!(query(&[("b", "")]), "");
    }

    #[test]
    fn json_viewer_escapes_keys_and_values_and_keeps_the_text() {
        let html = json_viewer("d", &json!({"<k>": ["</pre><script>", 1, null, {}]}));
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;k&gt;"));
        assert!(html.contains("<pre id=\"d-text\" hidden>"));
        assert!(html.contains("&quot;&lt;/pre&gt;&lt;script&gt;&quot;"));
        assert_eq!(html.matches("<details").count(), 2);
    }

    #[test]
    fn times_durations_and_pages() {
        assert!(time(0).contains("1970-01-01T00:00:00.000Z"));
        assert_eq!(time_of(None), "—");
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(12_400), "12.4 s");
        assert_eq!(duration(185_000), "3 min 5 s");
        assert_eq!(short("a\n  b", 10), "a b");
        assert_eq!(short("abcdef", 4), "abc…");
        let p = Pager::new(2, 10, 25, |n| format!("?page={n}"));
        assert_eq!(
            (p.pages, p.prev.as_deref(), p.next.as_deref()),
            (3, Some("?page=1"), Some("?page=3"))
        );
        assert_eq!(Pager::new(1, 10, 0, |n| n.to_string()).pages, 1);
    }

    #[test]
    fn chart_has_a_bar_per_minute_scaled_to_the_busiest() {
        let m = |minute, completed, failed| MinuteCounts {
            minute,
            completed,
            failed,
        };
        let svg = chart(&[m(0, 10, 0), m(60_000, 0, 0), m(120_000, 5, 5)]);
        assert_eq!(svg.matches("<g class=\"bar\"").count(), 3);
        assert!(svg.contains(">10</text>"), "max label");
        assert!(svg.contains("5 completed, 5 failed"));
        assert_eq!(svg.matches("class=\"failed\"").count(), 1);
        assert_eq!(chart(&[]), "");
    }
}
