//! Templates over a job's data (email subjects and bodies, AI prompts): Jinja syntax
//! (minijinja), strict about undefined variables — a template naming a variable the job does
//! not carry is an error naming the variable, never an empty string in a sent mail.
//! Templates whose name ends in `.html` are HTML-escaped.

use std::collections::BTreeSet;

use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value};

/// A set of named templates.
pub struct Templates {
    env: Environment<'static>,
    /// Each template's variables (dotted paths), to name the undefined one.
    variables: std::collections::HashMap<String, BTreeSet<String>>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("names", &self.variables.keys().collect::<Vec<_>>())
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
            variables: Default::default(),
        }
    }

    /// Adds a template; a syntax error is returned as text (with its line).
    pub fn add(&mut self, name: &str, source: &str) -> Result<(), String> {
        self.env
            .add_template_owned(name.to_string(), source.to_string())
            .map_err(|e| describe(&e))?;
        let t = self.env.get_template(name).map_err(|e| describe(&e))?;
        self.variables.insert(
            name.to_string(),
            t.undeclared_variables(true).into_iter().collect(),
        );
        Ok(())
    }

    /// Whether `name` is a template here.
    pub fn has(&self, name: &str) -> bool {
        self.variables.contains_key(name)
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
        let t = self
            .env
            .get_template(name)
            .map_err(|_| format!("no template {name:?}"))?;
        t.render(value).map_err(|e| {
            if e.kind() == ErrorKind::UndefinedError {
                if let Some(var) = self.missing(name, ctx) {
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
        self.variables.get(name)?.iter().find_map(|path| {
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
    }
}
