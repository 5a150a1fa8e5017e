//! Masks secrets in payloads before they reach the audit log: any object key that names a
//! secret has its value replaced by `"***"`, at any depth, in objects and arrays.

use serde_json::Value;

/// Key fragments that mark a secret, compared case-insensitively with `-`/`_` removed.
const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "token",
    "secret",
    "authorization",
    "apikey",
    "cookie",
    "creditcard",
    "cardnumber",
    "cvv",
    "privatekey",
];

/// Whether `key` names a secret (`password`, `accessToken`, `api_key`, `X-Api-Key`,
/// `credit_card`, ...).
pub fn is_secret_key(key: &str) -> bool {
    let k: String = key
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
    SECRET_KEYS.iter().any(|s| k.contains(s))
}

/// `value` with every secret replaced by `"***"`.
pub fn mask(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let masked = if is_secret_key(k) && !v.is_null() {
                        Value::String("***".into())
                    } else {
                        mask(v)
                    };
                    (k.clone(), masked)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(mask).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masks_recursively_and_case_insensitively() {
        let input = json!({
            "name": "welcome",
            "data": {
                "Password": "hunter2",
                "profile": {"apiKey": "k1", "api_key": "k2", "nested": [{"accessToken": "t"}, {"ok": 1}]},
                "Authorization": "Bearer x",
                "cookie": "sid=1",
                "credit_card": "4111",
                "clientSecret": {"deep": "object"},
                "tokens_used": 5
            },
            "list": ["password", {"SECRET": "s"}]
        });
        let out = mask(&input);
        assert_eq!(out["name"], "welcome");
        assert_eq!(out["data"]["Password"], "***");
        assert_eq!(out["data"]["profile"]["apiKey"], "***");
        assert_eq!(out["data"]["profile"]["api_key"], "***");
        assert_eq!(out["data"]["profile"]["nested"][0]["accessToken"], "***");
        assert_eq!(out["data"]["profile"]["nested"][1]["ok"], 1);
        assert_eq!(out["data"]["Authorization"], "***");
        assert_eq!(out["data"]["cookie"], "***");
        assert_eq!(out["data"]["credit_card"], "***");
        assert_eq!(out["data"]["clientSecret"], "***");
        // A key that merely contains "token" is masked too: safer to over-mask.
        assert_eq!(out["data"]["tokens_used"], "***");
        // Values are never inspected, only keys.
        assert_eq!(out["list"][0], "password");
        assert_eq!(out["list"][1]["SECRET"], "***");
        assert!(!out.to_string().contains("hunter2"));
    }
}
