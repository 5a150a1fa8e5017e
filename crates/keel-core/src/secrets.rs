//! Secrets kept out of logs, audit payloads and error messages: one set of rules used by the
//! audit log, the `log` handler, start-up errors and every `Debug` of a URL.
//!
//! - A **key** names a secret when, compared case-insensitively with `-`/`_` removed, it
//!   contains one of [`SECRET_FRAGMENTS`] (`password`, `accessToken`, `api_key`, ...), or when
//!   one of its words (split at `_`, `-`, `.` and camelCase humps) is one of [`SECRET_WORDS`]
//!   (`pwd`, `pass`, `auth`, `sid`, ...; whole words only, so `author` or `passenger` stay).
//! - A **name/value pair** (`{"name": "Authorization", "value": "Bearer …"}`, as in HAR files,
//!   header lists and form fields; also `key`/`value`) has its value masked when the name does.
//! - A **string value** is masked where it carries a credential: `Bearer …`/`Basic …`
//!   (and the other HTTP auth schemes) keep the scheme, URLs lose the password of their
//!   `user:password@` and the values of secret query parameters (`?password=…`).

use serde_json::Value;

/// What a masked value becomes.
pub const MASK: &str = "***";

/// Key fragments that mark a secret wherever they occur in the key.
pub const SECRET_FRAGMENTS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "token",
    "secret",
    "authorization",
    "apikey",
    "cookie",
    "credential",
    "creditcard",
    "cardnumber",
    "cvv",
    "privatekey",
];

/// Words that mark a secret only as a whole word of the key (`sessionId`, `x-auth`, `jwt`).
pub const SECRET_WORDS: &[&str] = &["pwd", "pass", "auth", "session", "sid", "jwt"];

/// The words after which a credential is masked: the HTTP authentication schemes whose
/// parameter (one token) is a credential, then `digest` (whose parameters are a list).
const MASKED_WORDS: &[&str] = &["bearer", "basic", "negotiate", "digest"];

/// The authentication schemes of [`MASKED_WORDS`].
const AUTH_SCHEMES: &[&str] = MASKED_WORDS.split_at(3).0;

/// Whether `key` names a secret (see the module docs).
pub fn is_secret_key(key: &str) -> bool {
    let squashed: String = key
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
    if SECRET_FRAGMENTS.iter().any(|s| squashed.contains(s)) {
        return true;
    }
    words(key).any(|w| SECRET_WORDS.contains(&w.as_str()))
}

/// The lower-cased words of a key: split at non-alphanumerics and at camelCase humps.
fn words(key: &str) -> impl Iterator<Item = String> + '_ {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in key.chars() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        cur.extend(c.to_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out.into_iter()
}

/// `value` with every secret replaced (see the module docs), at any depth.
pub fn mask(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            // A name/value pair whose name is a secret: mask the value.
            let pair_is_secret = ["name", "key"].iter().any(|k| {
                map.get(*k)
                    .and_then(Value::as_str)
                    .is_some_and(is_secret_key)
            });
            Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        let secret = is_secret_key(k) || (pair_is_secret && k == "value");
                        let masked = if secret && !v.is_null() {
                            Value::String(MASK.into())
                        } else {
                            mask(v)
                        };
                        (k.clone(), masked)
                    })
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(mask).collect()),
        Value::String(s) => Value::String(mask_str(s)),
        other => other.clone(),
    }
}

/// [`mask_str`] of an owned string: `s` itself (not a copy) when nothing in it can change.
pub fn mask_string(s: String) -> String {
    if may_hold_secrets(&s) {
        mask_str(&s)
    } else {
        s
    }
}

/// Whether masking can change `s`: only a URL (a scheme or a query) or an auth scheme's word
/// can (most prompts and messages hold none, and are kept as they are).
fn may_hold_secrets(s: &str) -> bool {
    if s.contains("://") || s.contains('?') {
        return true;
    }
    // One pass over the bytes (prompts are long): a word is compared only where its first
    // letter is.
    let b = s.as_bytes();
    b.iter().enumerate().any(|(i, &c)| {
        MASKED_WORDS.iter().any(|w| {
            c.eq_ignore_ascii_case(&w.as_bytes()[0])
                && b[i..].len() >= w.len()
                && b[i..i + w.len()].eq_ignore_ascii_case(w.as_bytes())
        })
    })
}

/// A free-text string with its credentials masked: the parameter after an auth scheme
/// (`Bearer abc` → `Bearer ***`, anywhere in the text), URL passwords and secret query
/// parameters. `Digest` masks the rest of the string (its parameters are a list).
pub fn mask_str(s: &str) -> String {
    if !may_hold_secrets(s) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut mask_next = false;
    while !rest.is_empty() {
        // One token (up to white space or a quote), then its separators.
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(rest.len());
        let (token, tail) = rest.split_at(end);
        let sep_end = tail
            .find(|c: char| !(c.is_whitespace() || c == '"' || c == '\''))
            .unwrap_or(tail.len());
        let (sep, after) = tail.split_at(sep_end);
        if token.is_empty() {
        } else if mask_next {
            out.push_str(MASK);
            mask_next = false;
        } else {
            if token.eq_ignore_ascii_case("digest") && !after.is_empty() {
                out.push_str(token);
                out.push(' ');
                out.push_str(MASK);
                return out;
            }
            mask_next = AUTH_SCHEMES.iter().any(|a| token.eq_ignore_ascii_case(a))
                && !after.is_empty()
                && sep.chars().all(|c| c == ' ')
                && looks_like_credential(after);
            // Only a token with a scheme or a query can hold a URL's secrets (most of a
            // prompt's or a message's words have neither, and are copied as they are).
            if token.contains("://") || token.contains('?') {
                out.push_str(&redact_url(token));
            } else {
                out.push_str(token);
            }
        }
        out.push_str(sep);
        rest = after;
    }
    out
}

/// Whether the next token of `rest` looks like a credential rather than a word of prose
/// ("Basic idea", "bearer of news"): long enough, no plain lower-case word.
fn looks_like_credential(rest: &str) -> bool {
    let token = rest
        .split(|c: char| c.is_whitespace() || c == '"' || c == '\'')
        .next()
        .unwrap_or("");
    let plain_word = token.chars().all(|c| c.is_ascii_lowercase());
    token.len() >= 6 && !plain_word
}

/// One URL with any password replaced by `***` (`redis://user:***@host`) and the values of
/// secret query parameters too (`?password=***`). Not a URL: returned unchanged.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match base.find("://") {
        Some(scheme) => {
            let authority_end = base[scheme + 3..]
                .find('/')
                .map(|i| scheme + 3 + i)
                .unwrap_or(base.len());
            match base[..authority_end].rfind('@') {
                Some(at) if at > scheme => {
                    let userinfo = &base[scheme + 3..at];
                    let user = userinfo.split(':').next().unwrap_or("");
                    if userinfo.contains(':') {
                        format!("{}{user}:{MASK}{}", &base[..scheme + 3], &base[at..])
                    } else {
                        format!("{}{MASK}{}", &base[..scheme + 3], &base[at..])
                    }
                }
                _ => base.to_string(),
            }
        }
        None => base.to_string(),
    };
    if let Some(q) = query {
        out.push('?');
        let parts: Vec<String> = q
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) if is_secret_key(k) && !v.is_empty() => format!("{k}={MASK}"),
                _ => pair.to_string(),
            })
            .collect();
        out.push_str(&parts.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_keys_table() {
        let table: &[(&str, bool)] = &[
            ("password", true),
            ("Password", true),
            ("passwd", true),
            ("pwd", true),
            ("db_pwd", true),
            ("pass", true),
            ("smtpPass", true),
            ("passphrase", true),
            ("credentials", true),
            ("awsCredential", true),
            ("auth", true),
            ("basicAuth", true),
            ("x-auth", true),
            ("session", true),
            ("sessionId", true),
            ("session_id", true),
            ("sid", true),
            ("jwt", true),
            ("idJwt", true),
            ("accessToken", true),
            ("api_key", true),
            ("X-Api-Key", true),
            ("Authorization", true),
            ("cookie", true),
            ("credit_card", true),
            ("clientSecret", true),
            ("private_key", true),
            // Whole words only for the short ones.
            ("author", false),
            ("authorName", false),
            ("passenger", false),
            ("compass", false),
            ("sidebar", false),
            ("considered", false),
            ("name", false),
            ("email", false),
            ("value", false),
        ];
        for (key, secret) in table {
            assert_eq!(is_secret_key(key), *secret, "{key}");
        }
    }

    #[test]
    fn masks_keys_pairs_and_values_at_any_depth() {
        let input = json!({
            "name": "welcome",
            "headers": [
                {"name": "Authorization", "value": "Bearer abc.def"},
                {"name": "Accept", "value": "text/html"},
                {"key": "X-Session", "value": "s-1"}
            ],
            "data": {
                "Password": "hunter2",
                "profile": {"apiKey": "k1", "nested": [{"accessToken": "t"}, {"ok": 1}]},
                "header": "Bearer eyJhbGci",
                "basic": "Basic dXNlcjpwdw==",
                "dsn": "postgres://app:s3cret@db:5432/app",
                "link": "see https://u:pw@example.com/x?a=1&password=p2&token=t2 now",
                "query": "/login?pass=p3&next=/home",
                "plain": "just text with a ? mark",
                "prose": "Basic idea of the plan",
                "sid": "abc",
                "tokens_used": 5,
                "nothing": null
            },
            "list": ["password", {"SECRET": "s"}]
        });
        let out = mask(&input);
        assert_eq!(
            mask_str("curl -H 'Authorization: Bearer tok-123abc' https://x"),
            "curl -H 'Authorization: Bearer ***' https://x"
        );
        assert_eq!(
            mask_str("sent with Bearer tok-123 ok"),
            "sent with Bearer *** ok"
        );
        assert_eq!(mask_str("the bearer of news"), "the bearer of news");
        assert_eq!(
            mask_string("sent with Bearer tok-123 ok".into()),
            "sent with Bearer *** ok"
        );
        assert_eq!(mask_string("Summarize it.".into()), "Summarize it.");
        for w in MASKED_WORDS {
            assert!(
                may_hold_secrets(&format!("x {} y", w.to_uppercase())),
                "{w}"
            );
        }
        assert!(!may_hold_secrets("a plain prompt, nothing in it"));
        assert_eq!(
            mask_str("Digest username=\"a\", response=\"b\""),
            "Digest ***"
        );
        assert_eq!(out["name"], "welcome");
        assert_eq!(out["headers"][0]["value"], "***");
        assert_eq!(out["headers"][0]["name"], "Authorization");
        assert_eq!(out["headers"][1]["value"], "text/html");
        assert_eq!(out["headers"][2]["value"], "***");
        assert_eq!(out["data"]["Password"], "***");
        assert_eq!(out["data"]["profile"]["apiKey"], "***");
        assert_eq!(out["data"]["profile"]["nested"][0]["accessToken"], "***");
        assert_eq!(out["data"]["profile"]["nested"][1]["ok"], 1);
        assert_eq!(out["data"]["header"], "Bearer ***");
        assert_eq!(out["data"]["basic"], "Basic ***");
        assert_eq!(out["data"]["dsn"], "postgres://app:***@db:5432/app");
        assert_eq!(
            out["data"]["link"],
            "see https://u:***@example.com/x?a=1&password=***&token=*** now"
        );
        assert_eq!(out["data"]["query"], "/login?pass=***&next=/home");
        assert_eq!(out["data"]["plain"], "just text with a ? mark");
        assert_eq!(out["data"]["prose"], "Basic idea of the plan");
        assert_eq!(out["data"]["sid"], "***");
        assert_eq!(out["data"]["tokens_used"], "***");
        assert_eq!(out["data"]["nothing"], Value::Null);
        assert_eq!(out["list"][0], "password");
        assert_eq!(out["list"][1]["SECRET"], "***");
        let text = out.to_string();
        for secret in [
            "hunter2",
            "abc.def",
            "eyJhbGci",
            "dXNlcjpwdw",
            "s3cret",
            "pw@",
            "p2",
            "p3",
            "s-1",
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }

    #[test]
    fn urls_lose_passwords_and_secret_query_parameters() {
        assert_eq!(
            redact_url("redis://user:hunter2@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact_url("redis://:pw@h:1"), "redis://:***@h:1");
        assert_eq!(redact_url("redis://tok@h:1"), "redis://***@h:1");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        assert_eq!(
            redact_url("postgres://h/db?user=a&password=hunter2&sslmode=off"),
            "postgres://h/db?user=a&password=***&sslmode=off"
        );
        assert_eq!(
            redact_url("redis://h:1/?password=x@y"),
            "redis://h:1/?password=***"
        );
        // An `@` in the path is not userinfo.
        assert_eq!(redact_url("http://h/a@b"), "http://h/a@b");
    }
}
