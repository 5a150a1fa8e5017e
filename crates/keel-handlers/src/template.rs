//! Templates over a job's data (email subjects and bodies, AI prompts): Jinja syntax
//! (minijinja), strict about undefined variables — a template naming a variable the job does
//! not carry is an error naming the variable, never an empty string in a sent mail.
//! Templates whose name ends in `.html` are HTML-escaped.

use std::collections::BTreeSet;

use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value};

/// A set of named templates.
pub struct Templates {
    env: Environment<'static>,
    /// Each template's variables (dotted paths), to name the undefined one, and its text when
    /// it has no expression, tag or comment (rendered once, not per job).
    entries: std::collections::HashMap<String, Entry>,
}

struct Entry {
    variables: BTreeSet<String>,
    literal: Option<String>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("names", &self.entries.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Default for Templates {
    fn default() -> Self {
        Templates::new()
    }
}

/// A job's data as the templates read it.
pub fn prepare(ctx: &serde_json::Value) -> Value {
    Value::from(minijinja::value::Serde(ctx))
}

impl Templates {
    /// No templates yet.
    pub fn new() -> Templates {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        Templates {
            env,
            entries: Default::default(),
        }
    }

    /// Adds a template; a syntax error is returned as text (with its line).
    pub fn add(&mut self, name: &str, source: &str) -> Result<(), String> {
        self.env
            .add_template_owned(name.to_string(), source.to_string())
            .map_err(|e| describe(&e))?;
        let t = self.env.get_template(name).map_err(|e| describe(&e))?;
        let plain = !["{{", "{%", "{#"].iter().any(|m| source.contains(m));
        let literal = if plain {
            // As minijinja renders it (its newline handling), once.
            Some(t.render(()).map_err(|e| describe(&e))?)
        } else {
            None
        };
        self.entries.insert(
            name.to_string(),
            Entry {
                variables: t.undeclared_variables(true).into_iter().collect(),
                literal,
            },
        );
        Ok(())
    }

    /// Whether `name` is a template here.
    pub fn has(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The top-level variables the templates read (`user` of `user.name`): Jinja names every
    /// variable it reads, so a context of these alone renders every template the same.
    pub fn roots(&self) -> BTreeSet<String> {
        self.entries
            .values()
            .flat_map(|e| &e.variables)
            .map(|path| path.split('.').next().unwrap_or(path).to_string())
            .collect()
    }

    /// Renders `name` over `ctx` (a JSON object). An undefined variable is named.
    pub fn render(&self, name: &str, ctx: &serde_json::Value) -> Result<String, String> {
        self.render_prepared(name, ctx, &prepare(ctx))
    }

    /// Renders `name` over `ctx` already [`prepare`]d as `value` (a job's data converted once
    /// for all the templates rendered from it).
    pub fn render_prepared(
        &self,
        name: &str,
        ctx: &serde_json::Value,
        value: &Value,
    ) -> Result<String, String> {
        self.render_value(name, value, || ctx.clone())
    }

    /// Renders `name` over `value`; `ctx` makes the same context as JSON, asked for only to
    /// name an undefined variable.
    pub fn render_value(
        &self,
        name: &str,
        value: &Value,
        ctx: impl FnOnce() -> serde_json::Value,
    ) -> Result<String, String> {
        if let Some(text) = self.entries.get(name).and_then(|e| e.literal.as_ref()) {
            return Ok(text.clone());
        }
        let t = self
            .env
            .get_template(name)
            .map_err(|_| format!("no template {name:?}"))?;
        t.render(value).map_err(|e| {
            if e.kind() == ErrorKind::UndefinedError {
                if let Some(var) = self.missing(name, &ctx()) {
                    return format!(
                        "template {name}: variable {var} is undefined in the job's data"
                    );
                }
            }
            format!("template {name}: {}", describe(&e))
        })
    }

    /// The first variable of `name` that `ctx` lacks.
    fn missing(&self, name: &str, ctx: &serde_json::Value) -> Option<String> {
        self.entries.get(name)?.variables.iter().find_map(|path| {
            let mut at = ctx;
            for part in path.split('.') {
                match at.get(part) {
                    Some(v) => at = v,
                    None => return Some(path.clone()),
                }
            }
            None
        })
    }
}

fn describe(e: &minijinja::Error) -> String {
    match (e.detail(), e.line()) {
        (Some(d), Some(l)) => format!("{} (line {l}): {d}", e.kind()),
        (Some(d), None) => format!("{}: {d}", e.kind()),
        (None, Some(l)) => format!("{} (line {l})", e.kind()),
        (None, None) => e.kind().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_and_names_the_undefined_variable() {
        let mut t = Templates::new();
        t.add("hello.txt", "Hi {{ user.name }}, code {{ code }}")
            .unwrap();
        t.add("hello.html", "<p>{{ user.name }}</p>").unwrap();
        let ctx = json!({"user": {"name": "<Ana>"}, "code": "123456"});
        assert_eq!(
            t.render("hello.txt", &ctx).unwrap(),
            "Hi <Ana>, code 123456"
        );
        assert_eq!(
            t.render("hello.html", &ctx).unwrap(),
            "<p>&lt;Ana&gt;</p>",
            "HTML templates escape"
        );
        let err = t
            .render("hello.txt", &json!({"user": {}, "code": 1}))
            .unwrap_err();
        assert!(err.contains("variable user.name is undefined"), "{err}");
        let err = t.add("bad.txt", "{{ a ").unwrap_err();
        assert!(err.contains("syntax"), "{err}");
        // Text without an expression is kept as minijinja renders it (its last newline off).
        t.add("plain.txt", "You summarize.\n").unwrap();
        t.add("plain.html", "<b>as is</b>").unwrap();
        assert_eq!(t.render("plain.txt", &ctx).unwrap(), "You summarize.");
        assert_eq!(t.render("plain.html", &ctx).unwrap(), "<b>as is</b>");
        t.add(
            "loop.txt",
            "{% for x in items %}{{ x.n }}{{ sep }}{% endfor %}{% set y = 1 %}{{ y }}",
        )
        .unwrap();
        let roots: Vec<String> = t.roots().into_iter().collect();
        assert_eq!(roots, ["code", "items", "sep", "user"]);
    }
}
