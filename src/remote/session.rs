//! One registry, as the client talks to it: a reqwest client with the TLS the
//! user configured, the scheme found by pinging `/v2/`, credentials, cached
//! Bearer tokens per scope, and [`Session::send`]: every request with a
//! timeout, retried with backoff on 429, 5xx and broken connections, and
//! re-authenticated once on 401.

use super::challenge::{self, Challenge, TokenResponse};
use super::credentials::{self, Credentials};
use super::reference::Reference;
use anyhow::{anyhow, bail, Context};
use reqwest::{header, Method, RequestBuilder, Response, StatusCode};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How the user reaches registries (`--creds`, `--cert-dir`, `--tls-verify`, ...).
#[derive(Clone, Debug)]
pub struct Options {
    pub creds: Option<Credentials>,
    /// A `certs.d`-style directory: `*.crt` CAs, `*.cert` + `*.key` client pairs.
    pub cert_dir: Option<PathBuf>,
    /// false: accept any certificate, and plain HTTP when TLS is not spoken.
    pub tls_verify: bool,
    /// Bound on a request without a streamed body, and on a stalled read.
    pub timeout: Duration,
    /// Further attempts after a 429, a 5xx or a broken connection.
    pub retries: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            creds: None,
            cert_dir: None,
            tls_verify: true,
            timeout: Duration::from_secs(60),
            retries: 4,
        }
    }
}

/// The first wait between attempts; doubled each time.
const BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

pub struct Session {
    client: reqwest::Client,
    /// `https://host[:port]` or, with --tls-verify=false, maybe `http://`.
    pub base: String,
    pub registry: String,
    creds: Option<Credentials>,
    opts: Options,
    state: tokio::sync::Mutex<AuthState>,
}

#[derive(Default)]
struct AuthState {
    challenge: Option<Challenge>,
    /// Bearer tokens by the scopes they were asked for.
    tokens: HashMap<String, String>,
}

/// `repository:NAME:pull` (and `,push`): what a token is asked for.
pub fn scope(repository: &str, push: bool) -> String {
    format!(
        "repository:{repository}:{}",
        if push { "pull,push" } else { "pull" }
    )
}

impl Session {
    /// Builds the client and pings the registry (`GET /v2/`), learning its
    /// scheme and auth challenge. Fails with one line on an unknown host,
    /// a refused connection or a refused certificate.
    pub async fn connect(r: &Reference, opts: &Options) -> anyhow::Result<Session> {
        let host = r.api_host().to_string();
        let client = build_client(&r.registry, opts)?;
        let creds = match &opts.creds {
            Some(c) => Some(c.clone()),
            None => credentials::lookup(&r.registry, &r.repository)?,
        };
        let mut s = Session {
            client,
            base: format!("https://{host}"),
            registry: r.registry.clone(),
            creds,
            opts: opts.clone(),
            state: Default::default(),
        };
        let ping = match s.ping().await {
            Ok(resp) => resp,
            Err(e) if !opts.tls_verify => {
                // --tls-verify=false also means "plain HTTP if TLS is not spoken".
                s.base = format!("http://{host}");
                let resp = s.ping().await.map_err(|e2| {
                    anyhow!(
                        "{host}: neither HTTPS ({}) nor plain HTTP ({}) answers",
                        chain(&e),
                        chain(&e2)
                    )
                })?;
                eprintln!(
                    "strata: warning: {host} speaks plain HTTP (allowed by --tls-verify=false)"
                );
                resp
            }
            Err(e) => {
                let m = chain(&e);
                let l = m.to_ascii_lowercase();
                // A handshake that failed, not a host or port that is not there.
                let hint = if ["certificate", "tls", "handshake", "corrupt message"]
                    .iter()
                    .any(|w| l.contains(w))
                {
                    " (a registry with a private CA needs --cert-dir; one without TLS, --tls-verify=false)"
                } else {
                    ""
                };
                return Err(anyhow!("{host}: {m}{hint}"));
            }
        };
        if !opts.tls_verify && s.base.starts_with("https") {
            eprintln!(
                "strata: warning: not verifying the TLS certificate of {host} (--tls-verify=false)"
            );
        }
        s.answer_ping(&ping).await?;
        Ok(s)
    }

    /// A session with a registry at a fixed base URL (`http://HOST:PORT`, as
    /// `--registry-mirror-of` names upstreams): no scheme probing, the
    /// credentials the auth files hold for HOST:PORT.
    pub async fn connect_url(url: &str, opts: &Options) -> anyhow::Result<Session> {
        let u = reqwest::Url::parse(url).with_context(|| format!("{url:?}: not a URL"))?;
        if !matches!(u.scheme(), "http" | "https") {
            bail!("{url}: http:// or https:// expected");
        }
        let host = u
            .host_str()
            .ok_or_else(|| anyhow!("{url}: no host"))?
            .to_string();
        let registry = match u.port() {
            Some(p) => format!("{host}:{p}"),
            None => host,
        };
        let creds = match &opts.creds {
            Some(c) => Some(c.clone()),
            None => credentials::lookup(&registry, "")?,
        };
        let s = Session {
            client: build_client(&registry, opts)?,
            base: url.trim_end_matches('/').to_string(),
            registry,
            creds,
            opts: opts.clone(),
            state: Default::default(),
        };
        let ping = s
            .ping()
            .await
            .map_err(|e| anyhow!("{url}: {}", chain(&e)))?;
        s.answer_ping(&ping).await?;
        Ok(s)
    }

    /// What `GET /v2/` said: fine, or an auth challenge to remember.
    async fn answer_ping(&self, ping: &Response) -> anyhow::Result<()> {
        match ping.status() {
            StatusCode::OK => Ok(()),
            StatusCode::UNAUTHORIZED => {
                self.learn(ping).await;
                Ok(())
            }
            StatusCode::NOT_FOUND => bail!("{}: /v2/ is not found: not an OCI registry", self.base),
            st => bail!("{}: GET /v2/ answered {st}", self.base),
        }
    }

    async fn ping(&self) -> reqwest::Result<Response> {
        let mut last = None;
        for attempt in 0..=self.opts.retries {
            match self
                .client
                .get(format!("{}/v2/", self.base))
                .timeout(self.opts.timeout)
                .send()
                .await
            {
                Ok(r) if retryable(r.status()) && attempt < self.opts.retries => {
                    tokio::time::sleep(backoff(attempt, Some(&r))).await
                }
                Ok(r) => return Ok(r),
                // A refused connection or a bad certificate does not heal:
                // only timeouts and resets are tried again.
                Err(e) if (e.is_timeout() || is_reset(&e)) && attempt < self.opts.retries => {
                    last = Some(e);
                    tokio::time::sleep(backoff(attempt, None)).await
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("an attempt failed"))
    }

    async fn learn(&self, resp: &Response) {
        let c = resp
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(challenge::parse);
        let mut st = self.state.lock().await;
        if c != st.challenge {
            st.tokens.clear();
        }
        st.challenge = c;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The Authorization header for `scopes`, fetching a token if needed.
    async fn authorization(
        &self,
        scopes: &[String],
        fresh: bool,
    ) -> anyhow::Result<Option<String>> {
        // The lock is not held while a token is fetched: other requests
        // (other scopes, cached tokens) go on meanwhile.
        let (challenge, cached) = {
            let st = self.state.lock().await;
            let key = scopes.join(" ");
            (st.challenge.clone(), st.tokens.get(&key).cloned())
        };
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self.creds.as_ref().map(|c| c.basic_header())),
            Some(Challenge::Bearer { realm, service }) => {
                if let (false, Some(t)) = (fresh, cached) {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let t = self.token(&realm, service.as_deref(), scopes).await?;
                self.state
                    .lock()
                    .await
                    .tokens
                    .insert(scopes.join(" "), t.clone());
                Ok(Some(format!("Bearer {t}")))
            }
        }
    }

    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> anyhow::Result<String> {
        let mut q: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = service {
            q.push(("service", s));
        }
        for s in scopes {
            q.push(("scope", s));
        }
        let mut last = None;
        for attempt in 0..=self.opts.retries {
            let mut req = self.client.get(realm).query(&q).timeout(self.opts.timeout);
            if let Some(c) = &self.creds {
                req = req.header(header::AUTHORIZATION, c.basic_header());
            }
            match req.send().await {
                Ok(r) if retryable(r.status()) && attempt < self.opts.retries => {
                    tokio::time::sleep(backoff(attempt, Some(&r))).await
                }
                Ok(r) if r.status().is_success() => {
                    let t: TokenResponse = r
                        .json()
                        .await
                        .with_context(|| format!("token from {realm}: not a token response"))?;
                    return t
                        .into_token()
                        .ok_or_else(|| anyhow!("token from {realm}: no token in the response"));
                }
                Ok(r) => {
                    let st = r.status();
                    bail!(
                        "the token service {realm} refused {}: {st}",
                        match &self.creds {
                            Some(c) => format!("the credentials of {}", c.username),
                            None => "anonymous access (pass --creds or log in)".into(),
                        }
                    )
                }
                Err(e)
                    if attempt < self.opts.retries
                        && (e.is_timeout() || e.is_connect() || is_reset(&e)) =>
                {
                    last = Some(e);
                    tokio::time::sleep(backoff(attempt, None)).await
                }
                Err(e) => bail!("the token service {realm}: {}", chain(&e)),
            }
        }
        bail!(
            "the token service {realm}: {}",
            chain(&last.expect("an attempt failed"))
        )
    }

    /// Sends the request `build` makes (again for each attempt), authorized
    /// for `scopes`. `streamed`: the response body may be long, so no total
    /// timeout is set (the client's read timeout still bounds a stall).
    /// Returns the response whatever its status, but a 401 after a fresh
    /// token, a 429 or 5xx after the last retry are errors.
    pub async fn send(
        &self,
        scopes: &[String],
        streamed: bool,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> anyhow::Result<Response> {
        let mut fresh = false;
        let mut attempt = 0;
        loop {
            let mut req = build(&self.client);
            if !streamed {
                req = req.timeout(self.opts.timeout);
            }
            if let Some(a) = self.authorization(scopes, fresh).await? {
                req = req.header(header::AUTHORIZATION, a);
            }
            let (method, url) = match req.try_clone().and_then(|r| r.build().ok()) {
                Some(r) => (r.method().clone(), r.url().clone()),
                None => (Method::GET, self.base.parse().expect("base url")),
            };
            let what = format!("{method} {}", url.path());
            match req.send().await {
                Ok(r) if r.status() == StatusCode::UNAUTHORIZED && !fresh => {
                    // An expired token, or a first challenge: learn and retry once.
                    self.learn(&r).await;
                    fresh = true;
                }
                Ok(r) if r.status() == StatusCode::UNAUTHORIZED => bail!(
                    "{what}: 401 Unauthorized{}",
                    if self.creds.is_none() {
                        " (no credentials: pass --creds USER:PASS or add them to an auth file)"
                    } else {
                        " (the credentials were refused)"
                    }
                ),
                Ok(r) if retryable(r.status()) && attempt < self.opts.retries => {
                    let wait = backoff(attempt, Some(&r));
                    tracing::debug!(%what, status = %r.status(), ?wait, "retrying");
                    attempt += 1;
                    tokio::time::sleep(wait).await;
                }
                Ok(r) if retryable(r.status()) => {
                    bail!("{what}: {} after {} attempts", r.status(), attempt + 1)
                }
                Ok(r) => return Ok(r),
                Err(e)
                    if attempt < self.opts.retries
                        && (e.is_timeout() || e.is_connect() || is_reset(&e)) =>
                {
                    tracing::debug!(%what, error = %chain(&e), "retrying");
                    tokio::time::sleep(backoff(attempt, None)).await;
                    attempt += 1;
                }
                Err(e) => bail!("{what}: {}", chain(&e)),
            }
        }
    }
}

fn retryable(s: StatusCode) -> bool {
    s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error()
}

/// Exponential backoff, or the server's `Retry-After` (seconds) when it is
/// sooner than the cap.
fn backoff(attempt: u32, r: Option<&Response>) -> Duration {
    let asked = r
        .and_then(|r| r.headers().get(header::RETRY_AFTER))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let exp = BACKOFF.saturating_mul(1 << attempt.min(8)).min(MAX_BACKOFF);
    asked.map_or(exp, |a| a.min(MAX_BACKOFF))
}

/// A connection the peer dropped part way (reset, closed, broken pipe).
pub(super) fn is_reset(e: &reqwest::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
            ) {
                return true;
            }
        }
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_closed() {
                return true;
            }
        }
        src = s.source();
    }
    e.is_body() || e.is_decode()
}

/// An error and its causes on one line (reqwest's Display names only the
/// outermost: "error sending request").
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let m = s.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        src = s.source();
    }
    out
}

/// The containers tools' places for a registry's certificates.
fn default_cert_dir(registry: &str) -> Option<PathBuf> {
    ["/etc/containers/certs.d", "/etc/docker/certs.d"]
        .iter()
        .map(|d| Path::new(d).join(registry))
        .find(|p| p.is_dir())
}

fn build_client(registry: &str, opts: &Options) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(15).min(opts.timeout))
        .read_timeout(opts.timeout)
        .redirect(reqwest::redirect::Policy::limited(10));
    let dir = opts.cert_dir.clone().or_else(|| default_cert_dir(registry));
    if let Some(dir) = dir {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("--cert-dir {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in &entries {
            match p.extension().and_then(|e| e.to_str()) {
                Some("crt") => {
                    let pem =
                        std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
                    for c in reqwest::Certificate::from_pem_bundle(&pem)
                        .with_context(|| format!("{}: not a PEM certificate", p.display()))?
                    {
                        b = b.add_root_certificate(c);
                    }
                }
                Some("cert") => {
                    let key = p.with_extension("key");
                    let mut pem =
                        std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
                    let k = std::fs::read(&key).with_context(|| {
                        format!("{}: its key {} is missing", p.display(), key.display())
                    })?;
                    pem.extend_from_slice(b"\n");
                    pem.extend_from_slice(&k);
                    let id = reqwest::Identity::from_pem(&pem).with_context(|| {
                        format!(
                            "{} and {}: not a PEM certificate and key",
                            p.display(),
                            key.display()
                        )
                    })?;
                    b = b.identity(id);
                }
                _ => {}
            }
        }
    }
    if !opts.tls_verify {
        b = b.danger_accept_invalid_certs(true);
    }
    b.build().context("building the HTTP client")
}
