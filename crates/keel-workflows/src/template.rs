//! Step inputs: a JSON template over the workflow's input and earlier steps' outputs.
//!
//! Any JSON value, in which strings may hold references `${path}`:
//! - a string that is exactly one reference becomes the referenced value itself, of any type
//!   (`"${steps.draft.output}"` → the whole output object); a missing value becomes `null`;
//! - a reference inside a longer string is interpolated as text (strings as they are, other
//!   values as JSON; missing as the empty string): `"Draft ${input.id} ready"`;
//! - `$${` writes a literal `${`.
//!
//! A path is `input` or `steps.<step>.output`, then `.key` or `.<index>` segments:
//! `input.topic`, `steps.fetch.output.items.0.url`. A step may only refer to steps it needs,
//! directly or through others — checked when the definition is loaded.

use keel_core::{Error, Result};
use serde_json::{Map, Value};

/// One piece of a template string.
enum Piece<'a> {
    Text(&'a str),
    Ref(&'a str),
}

fn pieces<'a>(s: &'a str, field: &str) -> Result<Vec<Piece<'a>>> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            // `$${` is a literal `${`.
            out.push(Piece::Text(&rest[..i]));
            out.push(Piece::Text("{"));
            rest = &rest[i + 2..];
            continue;
        }
        out.push(Piece::Text(&rest[..i]));
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| Error::invalid(field, format!("unclosed ${{ in {s:?}")))?;
        out.push(Piece::Ref(after[..end].trim()));
        rest = &after[end + 1..];
    }
    out.push(Piece::Text(rest));
    Ok(out)
}

/// Checks every reference of `template`; `is_need` says whether a step may be referred to.
pub fn check(template: &Value, field: &str, is_need: &dyn Fn(&str) -> bool) -> Result<()> {
    match template {
        Value::String(s) => {
            for p in pieces(s, field)? {
                if let Piece::Ref(path) = p {
                    check_path(path, field, is_need)?;
                }
            }
            Ok(())
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| check(v, &format!("{field}[{i}]"), is_need)),
        Value::Object(map) => map
            .iter()
            .try_for_each(|(k, v)| check(v, &format!("{field}.{k}"), is_need)),
        _ => Ok(()),
    }
}

fn check_path(path: &str, field: &str, is_need: &dyn Fn(&str) -> bool) -> Result<()> {
    let mut segs = path.split('.');
    match segs.next() {
        Some("input") => Ok(()),
        Some("steps") => {
            let step = segs.next().unwrap_or("");
            if step.is_empty() || !is_need(step) {
                return Err(Error::invalid(
                    field,
                    format!("${{{path}}}: {step:?} is not a step this one needs"),
                ));
            }
            match segs.next() {
                Some("output") => Ok(()),
                _ => Err(Error::invalid(
                    field,
                    format!("${{{path}}}: write steps.{step}.output[.…]"),
                )),
            }
        }
        _ => Err(Error::invalid(
            field,
            format!("${{{path}}}: a reference starts with input or steps"),
        )),
    }
}

/// The value at `path` in `ctx` (`{"input": …, "steps": {"<step>": {"output": …}}}`).
fn lookup<'a>(ctx: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(ctx, |v, seg| match v {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// Renders `template` against `ctx`. Checked templates cannot fail; an unchecked one renders
/// what it can (a bad reference is `null`).
pub fn render(template: &Value, ctx: &Value) -> Value {
    match template {
        Value::String(s) => {
            let Ok(ps) = pieces(s, "") else {
                return template.clone();
            };
            let refs = ps.iter().filter(|p| matches!(p, Piece::Ref(_))).count();
            let only_ref = refs == 1
                && ps.iter().all(|p| match p {
                    Piece::Text(t) => t.is_empty(),
                    Piece::Ref(_) => true,
                });
            if only_ref {
                let path = ps
                    .iter()
                    .find_map(|p| match p {
                        Piece::Ref(r) => Some(*r),
                        _ => None,
                    })
                    .unwrap_or("");
                return lookup(ctx, path).cloned().unwrap_or(Value::Null);
            }
            let mut out = String::new();
            for p in ps {
                match p {
                    Piece::Text(t) => out.push_str(t),
                    Piece::Ref(r) => match lookup(ctx, r) {
                        Some(Value::String(v)) => out.push_str(v),
                        Some(Value::Null) | None => {}
                        Some(v) => out.push_str(&v.to_string()),
                    },
                }
            }
            Value::String(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| render(v, ctx)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), render(v, ctx)))
                .collect::<Map<_, _>>(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_become_values_or_text() {
        let ctx = json!({
            "input": {"topic": "rust", "n": 3},
            "steps": {"draft": {"output": {"text": "hello", "tags": ["a", "b"]}}}
        });
        let t = json!({
            "whole": "${steps.draft.output}",
            "n": "${input.n}",
            "tag": "${steps.draft.output.tags.1}",
            "line": "About ${input.topic} (${input.n}): ${steps.draft.output.text}",
            "missing": "${input.nope}",
            "literal": "costs $${price}",
            "list": ["${input.topic}", 1, null],
        });
        assert_eq!(
            render(&t, &ctx),
            json!({
                "whole": {"text": "hello", "tags": ["a", "b"]},
                "n": 3,
                "tag": "b",
                "line": "About rust (3): hello",
                "missing": null,
                "literal": "costs ${price}",
                "list": ["rust", 1, null],
            })
        );
    }

    #[test]
    fn checks_name_the_key() {
        let needs = |s: &str| s == "draft";
        assert!(check(&json!({"a": "${steps.draft.output.x}"}), "f", &needs).is_ok());
        let e = check(&json!({"a": ["${steps.seo.output}"]}), "f", &needs).unwrap_err();
        assert_eq!(e.field(), Some("f.a[0]"));
        let e = check(&json!("${steps.draft.input}"), "f", &needs).unwrap_err();
        assert!(e.to_string().contains("steps.draft.output"), "{e}");
        let e = check(&json!("${input"), "f", &needs).unwrap_err();
        assert!(e.to_string().contains("unclosed"), "{e}");
    }
}
