//! The SMTP connections of the `email` handler: a pool per server URL, each connection with
//! `TCP_NODELAY`, reused across sends.
//!
//! Why not lettre's own pooled transport: lettre 0.11.23 (the latest release) leaves Nagle on,
//! and an SMTP exchange is a write then a wait for a reply, so each message waits for the
//! server's delayed ACK — 40 ms a message, 23 messages/s on one connection on loopback
//! (measured with `keel bench --scenario email`; lettre/lettre#1159 fixes it upstream, not yet
//! released). The connections themselves are lettre's ([`AsyncSmtpConnection`]: EHLO,
//! STARTTLS, AUTH, the SMTP commands); only the socket is opened here — except for `smtps://`,
//! whose TLS-from-the-start socket lettre opens itself (its TLS stream type is not public), so
//! those connections keep Nagle until lettre ships the fix.
//!
//! URLs as lettre reads them: `smtp://host[:25]` (plain), `smtp://host[:587]?tls=required`
//! (STARTTLS, refused if the server cannot), `?tls=opportunistic` (STARTTLS when offered),
//! `smtps://host[:465]` (TLS from the start); `user:password@` for AUTH (PLAIN, LOGIN), a path
//! for the EHLO name.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use lettre::transport::smtp::Error;
use tokio::sync::{Mutex, Semaphore};

/// Connections idle longer than this are closed rather than reused (servers drop idle
/// clients after a few minutes; RFC 5321 asks them to wait at least 5).
const IDLE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    Plain,
    StartTls { required: bool },
    Implicit,
}

/// A pool of SMTP connections to one server.
pub struct SmtpPool {
    host: String,
    port: u16,
    security: Security,
    hello: ClientId,
    credentials: Option<Credentials>,
    timeout: Duration,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    permits: Semaphore,
}

impl std::fmt::Debug for SmtpPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpPool")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .finish()
    }
}

impl SmtpPool {
    /// A pool for `url` keeping at most `size` connections, each step bounded by `timeout`.
    pub fn new(url: &str, timeout: Duration, size: u32) -> Result<SmtpPool, String> {
        let u = url::Url::parse(url).map_err(|e| e.to_string())?;
        let tls = u
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.to_string());
        let (security, default_port) = match (u.scheme(), tls.as_deref()) {
            ("smtp", None) => (Security::Plain, 25),
            ("smtp", Some("required")) => (Security::StartTls { required: true }, 587),
            ("smtp", Some("opportunistic")) => (Security::StartTls { required: false }, 587),
            ("smtps", _) => (Security::Implicit, 465),
            (scheme, tls) => {
                return Err(format!(
                    "scheme {scheme:?} with tls {tls:?}: use smtp://, smtp://…?tls=required, ?tls=opportunistic or smtps://"
                ))
            }
        };
        let host = u.host_str().ok_or("no host")?.to_string();
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(Cow::into_owned)
                .map_err(|e| e.to_string())
        };
        let credentials = match u.password() {
            Some(p) => Some(Credentials::new(decode(u.username())?, decode(p)?)),
            None => None,
        };
        let hello = match u.path().trim_matches('/') {
            "" => ClientId::default(),
            name => ClientId::Domain(name.to_string()),
        };
        Ok(SmtpPool {
            port: u.port().unwrap_or(default_port),
            host,
            security,
            hello,
            credentials,
            timeout,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size.max(1) as usize),
        })
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let mut conn = if self.security == Security::Implicit {
            AsyncSmtpConnection::connect_tokio1(
                (self.host.as_str(), self.port),
                Some(self.timeout),
                &self.hello,
                Some(TlsParameters::new(self.host.clone())?),
                None,
            )
            .await?
        } else {
            let tcp = tokio::time::timeout(
                self.timeout,
                tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
            )
            .await
            .map_err(|_| {
                SendError::Connect(format!(
                    "connecting to {}:{} timed out after {} ms",
                    self.host,
                    self.port,
                    self.timeout.as_millis()
                ))
            })?
            .map_err(|e| {
                SendError::Connect(format!("connecting to {}:{}: {e}", self.host, self.port))
            })?;
            tcp.set_nodelay(true)
                .map_err(|e| SendError::Connect(format!("setting TCP_NODELAY: {e}")))?;
            AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello).await?
        };
        if let Security::StartTls { required } = self.security {
            if conn.can_starttls() {
                conn.starttls(TlsParameters::new(self.host.clone())?, &self.hello)
                    .await?;
            } else if required {
                let _ = conn.quit().await;
                return Err(SendError::Connect(format!(
                    "{} does not offer STARTTLS (tls=required)",
                    self.host
                )));
            }
        }
        if let Some(c) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], c).await?;
        }
        Ok(conn)
    }

    /// Sends `message` (formatted) to `envelope`'s recipients on a pooled connection (a new
    /// one when none is idle); a reused connection that turns out closed is replaced once.
    pub async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<Response, SendError> {
        let _permit = self.permits.acquire().await.expect("never closed");
        let reused = {
            let mut idle = self.idle.lock().await;
            let mut found = None;
            while let Some((conn, at)) = idle.pop() {
                if at.elapsed() < IDLE {
                    found = Some(conn);
                    break;
                }
                let mut old = conn;
                tokio::spawn(async move { old.abort().await });
            }
            found
        };
        let (mut conn, was_reused) = match reused {
            Some(c) => (c, true),
            None => (self.connect().await?, false),
        };
        let mut result = conn.send(envelope, message).await;
        if was_reused && conn.has_broken() && matches!(&result, Err(e) if !e.is_response()) {
            // The server closed the idle connection: once more, on a new one.
            conn = self.connect().await?;
            result = conn.send(envelope, message).await;
        }
        if !conn.has_broken() {
            self.idle.lock().await.push((conn, Instant::now()));
        }
        Ok(result?)
    }
}

/// Why a send failed: the connection could not be made, or the server (or the exchange) said
/// no.
#[derive(Debug)]
pub enum SendError {
    /// Connecting (TCP, its timeout, a required STARTTLS the server does not offer).
    Connect(String),
    /// lettre's: an SMTP reply, TLS, a broken connection, a timeout.
    Smtp(Error),
}

impl From<Error> for SendError {
    fn from(e: Error) -> SendError {
        SendError::Smtp(e)
    }
}

impl SendError {
    /// A permanent refusal (5xx): sending again cannot succeed.
    pub fn is_permanent(&self) -> bool {
        matches!(self, SendError::Smtp(e) if e.is_permanent())
    }

    /// The SMTP reply code, when the server answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            SendError::Smtp(e) => e.status().map(u16::from),
            SendError::Connect(_) => None,
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(m) => f.write_str(m),
            SendError::Smtp(e) => write!(f, "{e}"),
        }
    }
}
