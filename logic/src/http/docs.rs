//! `/docs`: the OpenAPI document rendered as one self-contained HTML page — every path
//! with its summary, description, query parameters, request fields, response fields and
//! error codes — so operators can browse the API on machines without internet access.
//!
//! It is rendered once, server-side, from the generated document (the JSON form), so it
//! can never disagree with `/openapi.json`. This module must never reference anything
//! outside the page: no CDN scripts, fonts or stylesheets, and no JavaScript at all.

use std::collections::BTreeSet;
use std::fmt::Write;

use serde_json::{Map, Value};

const STYLE: &str = "\
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}\
code{background:#f3f3f3;padding:0 .25em;border-radius:3px}\
table{border-collapse:collapse;margin:.5em 0 1em;width:100%}\
th,td{border:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}\
th{background:#f7f7f7}\
section.op{border-top:2px solid #333;margin-top:2em;padding-top:.5em}\
.method{font-weight:bold;color:#fff;background:#2a6;padding:.1em .4em;border-radius:3px;margin-right:.4em}\
.method.get{background:#36c}\
h4{margin-bottom:.2em}\
.muted{color:#777}";

/// Escapes text for HTML element content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
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

/// Escapes text and turns `backticked` spans into `<code>`.
fn inline(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in s.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{}</code>", esc(part));
        } else {
            out.push_str(&esc(part));
        }
    }
    out
}

/// A tiny Markdown subset: paragraphs, `code` spans and pipe tables.
fn markdown(text: &str) -> String {
    let mut out = String::new();
    for block in text.split("\n\n") {
        let lines: Vec<&str> = block.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        if lines.is_empty() {
            continue;
        }
        if lines.iter().all(|l| l.starts_with('|')) {
            out.push_str("<table>");
            for (i, line) in lines.iter().enumerate() {
                if i == 1 && line.contains("---") {
                    continue;
                }
                let tag = if i == 0 { "th" } else { "td" };
                out.push_str("<tr>");
                for cell in line.trim_matches('|').split('|') {
                    let _ = write!(out, "<{tag}>{}</{tag}>", inline(cell.trim()));
                }
                out.push_str("</tr>");
            }
            out.push_str("</table>");
        } else {
            let _ = write!(out, "<p>{}</p>", inline(&lines.join(" ")));
        }
    }
    out
}

/// The component name of a `$ref`.
fn ref_name(v: &Value) -> Option<&str> {
    v.get("$ref").and_then(Value::as_str).and_then(|r| r.rsplit('/').next())
}

struct Renderer<'a> {
    schemas: &'a Map<String, Value>,
}

impl<'a> Renderer<'a> {
    /// Follows a `$ref` to its component (one level; components are not refs).
    fn resolve(&self, v: &'a Value) -> &'a Value {
        match ref_name(v).and_then(|n| self.schemas.get(n)) {
            Some(target) => target,
            None => v,
        }
    }

    /// A human-readable type, collecting referenced component names into `refs`.
    fn type_name(&self, v: &Value, refs: &mut Vec<String>) -> String {
        if let Some(name) = ref_name(v) {
            if !refs.iter().any(|r| r == name) {
                refs.push(name.to_string());
            }
            return format!("<a href=\"#schema-{0}\">{0}</a>", esc(name));
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(alts) = v.get(key).and_then(Value::as_array) {
                let parts: Vec<String> = alts.iter().map(|a| self.type_name(a, refs)).collect();
                return parts.join(" | ");
            }
        }
        if let Some(all) = v.get("allOf").and_then(Value::as_array) {
            let parts: Vec<String> = all.iter().map(|a| self.type_name(a, refs)).collect();
            return parts.join(" &amp; ");
        }
        let types: Vec<String> = match v.get("type") {
            Some(Value::String(t)) => vec![t.clone()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).map(String::from).collect(),
            _ => Vec::new(),
        };
        let mut names = Vec::new();
        for t in types {
            let name = match t.as_str() {
                "array" => {
                    let item = v.get("items").map_or_else(|| "any".to_string(), |i| self.type_name(i, refs));
                    format!("array of {item}")
                }
                "object" if v.get("properties").is_some() => "object (fields below)".to_string(),
                "null" => "null".to_string(),
                other => match v.get("format").and_then(Value::as_str) {
                    Some(f) => format!("{} ({})", esc(other), esc(f)),
                    None => esc(other),
                },
            };
            names.push(name);
        }
        if names.is_empty() {
            "any".into()
        } else {
            names.join(" | ")
        }
    }

    /// The properties and required list of an object schema (refs and allOf merged).
    fn fields(&self, v: &'a Value) -> (Vec<(&'a String, &'a Value)>, BTreeSet<String>) {
        let v = self.resolve(v);
        let mut props = Vec::new();
        let mut required = BTreeSet::new();
        if let Some(all) = v.get("allOf").and_then(Value::as_array) {
            for part in all {
                let (p, r) = self.fields(part);
                props.extend(p);
                required.extend(r);
            }
        }
        if let Some(p) = v.get("properties").and_then(Value::as_object) {
            props.extend(p.iter());
        }
        if let Some(r) = v.get("required").and_then(Value::as_array) {
            required.extend(r.iter().filter_map(Value::as_str).map(String::from));
        }
        (props, required)
    }

    /// A table of an object's fields, then one table per referenced component (each
    /// once per operation, so recursive types terminate).
    fn object_tables(&self, out: &mut String, title: &str, schema: &'a Value, seen: &mut BTreeSet<String>) {
        let mut refs = Vec::new();
        let (props, required) = self.fields(schema);
        let _ = write!(out, "<h4>{}</h4>", esc(title));
        if props.is_empty() {
            let _ = write!(out, "<p>{}</p>", self.type_name(schema, &mut refs));
        } else {
            out.push_str("<table><tr><th>field</th><th>type</th><th>required</th><th>description</th></tr>");
            for (name, prop) in props {
                let ty = self.type_name(prop, &mut refs);
                let desc = prop.get("description").and_then(Value::as_str).unwrap_or("");
                let req = if required.contains(name.as_str()) { "yes" } else { "no" };
                let _ = write!(
                    out,
                    "<tr><td><code>{}</code></td><td>{ty}</td><td>{req}</td><td>{}</td></tr>",
                    esc(name),
                    markdown(desc)
                );
            }
            out.push_str("</table>");
        }
        for name in refs {
            if seen.insert(name.clone()) {
                if let Some(s) = self.schemas.get(&name) {
                    let desc = s.get("description").and_then(Value::as_str).unwrap_or("");
                    let _ = write!(out, "<div id=\"schema-{0}\"></div>", esc(&name));
                    self.object_tables(out, &name, s, seen);
                    if !desc.is_empty() {
                        let _ = write!(out, "<div class=\"muted\">{}</div>", markdown(desc));
                    }
                }
            }
        }
    }

    fn operation(&self, out: &mut String, path: &str, method: &str, op: &'a Value) {
        let anchor: String = path.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        let summary = op.get("summary").and_then(Value::as_str).unwrap_or("");
        let _ = write!(
            out,
            "<section class=\"op\" id=\"op{anchor}\"><h3><span class=\"method {m}\">{M}</span><code>{p}</code></h3><p><b>{s}</b></p>",
            m = esc(method),
            M = esc(&method.to_uppercase()),
            p = esc(path),
            s = inline(summary)
        );
        if let Some(d) = op.get("description").and_then(Value::as_str) {
            out.push_str(&markdown(d));
        }
        if let Some(params) = op.get("parameters").and_then(Value::as_array) {
            out.push_str("<h4>Query parameters</h4><table><tr><th>name</th><th>type</th><th>required</th><th>description</th></tr>");
            for p in params {
                let mut refs = Vec::new();
                let ty = p.get("schema").map_or_else(|| "any".into(), |s| self.type_name(s, &mut refs));
                let req = if p.get("required").and_then(Value::as_bool) == Some(true) { "yes" } else { "no" };
                let _ = write!(
                    out,
                    "<tr><td><code>{}</code></td><td>{ty}</td><td>{req}</td><td>{}</td></tr>",
                    esc(p.get("name").and_then(Value::as_str).unwrap_or("")),
                    markdown(p.get("description").and_then(Value::as_str).unwrap_or(""))
                );
            }
            out.push_str("</table>");
        }
        let mut seen = BTreeSet::new();
        if let Some(body) = op.pointer("/requestBody/content/application~1json/schema") {
            self.object_tables(out, "Request body", body, &mut seen);
        }
        if let Some(ok) = op.pointer("/responses/200/content") {
            let schema = ok.as_object().and_then(|c| c.values().next()).and_then(|c| c.get("schema"));
            if let Some(schema) = schema {
                let resolved = self.resolve(schema);
                match resolved.pointer("/properties/data") {
                    Some(data) => self.object_tables(out, "Response data (the envelope's data)", data, &mut seen),
                    None => self.object_tables(out, "Response", schema, &mut seen),
                }
            }
        }
        code_table(out, "Errors (the whole call fails)", op.get("x-error-codes"), true);
        code_table(
            out,
            "Per-item errors (listed in errorId; the other items still succeed)",
            op.get("x-item-error-codes"),
            false,
        );
        out.push_str("</section>");
    }
}

/// A table of `[{code, status, meaning}]` (the document's `x-error-codes` lists).
fn code_table(out: &mut String, title: &str, list: Option<&Value>, with_status: bool) {
    let Some(list) = list.and_then(Value::as_array).filter(|l| !l.is_empty()) else { return };
    let http = if with_status { "<th>HTTP</th>" } else { "" };
    let _ = write!(out, "<h4>{}</h4><table><tr><th>code</th>{http}<th>meaning</th></tr>", esc(title));
    for c in list {
        // Per-item codes travel inside a 200 answer: their HTTP status would mislead.
        let status = if with_status { format!("<td>{}</td>", c["status"]) } else { String::new() };
        let _ = write!(
            out,
            "<tr><td>{}</td>{status}<td>{}</td></tr>",
            c["code"],
            inline(c["meaning"].as_str().unwrap_or(""))
        );
    }
    out.push_str("</table>");
}

/// Renders the whole page from the OpenAPI document (its JSON form).
pub fn render(doc: &Value) -> String {
    let empty = Map::new();
    let schemas = doc.pointer("/components/schemas").and_then(Value::as_object).unwrap_or(&empty);
    let r = Renderer { schemas };
    let title = doc.pointer("/info/title").and_then(Value::as_str).unwrap_or("API");
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head><body><h1>{t}</h1>",
        t = esc(title)
    );
    if let Some(d) = doc.pointer("/info/description").and_then(Value::as_str) {
        out.push_str(&markdown(d));
    }
    let mut ops: Vec<(&String, &str, &Value)> = Vec::new();
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        for (path, item) in paths {
            for method in ["get", "post", "put", "delete", "patch"] {
                if let Some(op) = item.get(method) {
                    ops.push((path, method, op));
                }
            }
        }
    }
    out.push_str("<h2>Endpoints</h2><ul>");
    for (path, method, op) in &ops {
        let anchor: String = path.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        let _ = write!(
            out,
            "<li><a href=\"#op{anchor}\"><code>{} {}</code></a> — {}</li>",
            esc(&method.to_uppercase()),
            esc(path),
            inline(op.get("summary").and_then(Value::as_str).unwrap_or(""))
        );
    }
    out.push_str("</ul>");
    for (path, method, op) in ops {
        r.operation(&mut out, path, method, op);
    }
    out.push_str("<p class=\"muted\">Generated from <a href=\"openapi.json\">openapi.json</a>.</p></body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_code_spans() {
        assert_eq!(inline("a `<b>` & c"), "a <code>&lt;b&gt;</code> &amp; c");
        assert_eq!(esc("\"'"), "&quot;&#39;");
    }

    #[test]
    fn markdown_tables() {
        let html = markdown("intro `x`\n\n| a | b |\n|---|---|\n| 1 | 2 |");
        assert_eq!(
            html,
            "<p>intro <code>x</code></p><table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>2</td></tr></table>"
        );
    }

    #[test]
    fn page_is_self_contained() {
        let html = render(&crate::http::openapi());
        assert!(!html.contains("<script"), "no scripts");
        assert!(!html.contains("http://") && !html.contains("https://"), "no outside references");
        assert!(html.contains("userData"));
    }
}
