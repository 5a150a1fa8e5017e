//! What every console page shares: the frame ([`Layout`]), rendering, the error and
//! confirmation pages, form bodies, the embedded assets and the security headers.

use askama::Template;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Rows per page of every listing.
pub const PAGE_SIZE: usize = 25;

/// The console's stylesheet.
pub const CSS: &str = include_str!("../../assets/console.css");
/// The console's script.
pub const JS: &str = include_str!("../../assets/console.js");

/// Version tag of the embedded assets (their length and a cheap checksum), for cache busting.
pub(crate) fn asset_version() -> &'static str {
    static V: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        let sum = CSS
            .bytes()
            .chain(JS.bytes())
            .fold(0u32, |a, b| a.rotate_left(5) ^ u32::from(b));
        format!("{:x}{sum:08x}", CSS.len() + JS.len())
    })
}

/// A parsed `application/x-www-form-urlencoded` body (repeated fields kept).
pub struct Form(Vec<(String, String)>);

impl Form {
    /// Parses a form body.
    pub fn parse(raw: &[u8]) -> Form {
        Form(
            form_urlencoded::parse(raw)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    /// Every value of `name` (repeated fields).
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// A rendered page with `status`.
pub fn html<T: Template>(status: StatusCode, t: T) -> Response {
    match t.render() {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a console template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered; it was logged",
            )
                .into_response()
        }
    }
}

/// An error page outside a session (no navigation).
pub fn bare_error(status: StatusCode, heading: &str, message: &str) -> Response {
    html(
        status,
        ErrorPage {
            layout: Layout::signed_out(heading),
            status: status.as_u16(),
            heading: heading.into(),
            message: message.into(),
            code: String::new(),
        },
    )
}

/// The HTML 404 page for browsers asking for a path that does not exist.
pub fn not_found_page(path: &str) -> Response {
    bare_error(
        StatusCode::NOT_FOUND,
        "Page not found",
        &format!("There is no page at {path}. The console starts at /."),
    )
}

/// What every page's frame shows.
pub struct Layout {
    pub(crate) title: String,
    pub(crate) nav: &'static str,
    pub(crate) signed_in: bool,
    pub(crate) role: String,
    pub(crate) who: String,
    pub(crate) tenant: String,
    pub(crate) csrf: String,
    pub(crate) can_act: bool,
    pub(crate) flash: String,
    pub(crate) flash_error: bool,
    /// What live events refresh the page: `""` (none), `queues`, `queue:<name>`, `runs`, `logs`.
    pub(crate) live: String,
    pub(crate) back: String,
    pub(crate) v: &'static str,
}

impl Layout {
    /// The frame of a page outside a session.
    pub fn signed_out(title: &str) -> Layout {
        Layout {
            title: title.into(),
            nav: "",
            signed_in: false,
            role: String::new(),
            who: String::new(),
            tenant: String::new(),
            csrf: String::new(),
            can_act: false,
            flash: String::new(),
            flash_error: false,
            live: String::new(),
            back: "/".into(),
            v: asset_version(),
        }
    }
    /// Live events refresh the page: `queues`, `queue:<name>`, `runs`.
    pub fn live(mut self, what: impl Into<String>) -> Layout {
        self.live = what.into();
        self
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
pub struct ErrorPage {
    pub(crate) layout: Layout,
    pub(crate) status: u16,
    pub(crate) heading: String,
    pub(crate) message: String,
    pub(crate) code: String,
}

#[derive(Template)]
#[template(path = "console/confirm.html")]
pub struct ConfirmPage {
    pub(crate) layout: Layout,
    pub(crate) heading: String,
    pub(crate) message: String,
    pub(crate) action: String,
    pub(crate) fields: Vec<(String, String)>,
    pub(crate) confirm: String,
    pub(crate) cancel: String,
    pub(crate) danger: bool,
}

/// An embedded asset, cached for a year (its URL carries [`asset_version`]).
pub fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
        .into_response()
}

/// Security headers of every console response.
pub async fn security_headers(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
             object-src 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if h.get(header::CACHE_CONTROL).is_none() {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}
