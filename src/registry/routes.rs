//! One handler parses every path: repository names contain `/`, so the
//! operation is found from the end of the path (`.../manifests/<ref>`,
//! `.../blobs/uploads/<id>`), then the name is checked against the grammar.

use super::errors::{ApiError, ApiResult, Code};
use super::names::check_name;
use super::{blobs, manifests, uploads, State};
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

pub(super) fn router(state: Arc<State>) -> axum::Router {
    axum::Router::new().fallback(move |req: Request| {
        let state = state.clone();
        async move { handle(state, req).await }
    })
}

/// The operations of the API, from the path.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Base,
    Catalog,
    Tags(&'a str),
    Manifest(&'a str, &'a str),
    Blob(&'a str, &'a str),
    UploadStart(&'a str),
    Upload(&'a str, &'a str),
    Referrers(&'a str, &'a str),
}

fn route(path: &str) -> Option<Route<'_>> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Route::Base);
    }
    let rest = rest.strip_prefix('/')?;
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags(name));
    }
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        return Some(Route::UploadStart(name));
    }
    let (head, last) = rest.rsplit_once('/')?;
    let (name, kind) = head.rsplit_once('/')?;
    match kind {
        "manifests" => Some(Route::Manifest(name, last)),
        "blobs" => Some(Route::Blob(name, last)),
        "referrers" => Some(Route::Referrers(name, last)),
        "uploads" => {
            let name = name.strip_suffix("/blobs")?;
            Some(Route::Upload(name, last))
        }
        _ => None,
    }
}

/// Query parameters, percent-decoded.
pub(super) fn query(req: &Request) -> Vec<(String, String)> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub(super) fn param<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(v) => {
                    out.push(v);
                    i += 3;
                }
                Err(_) => {
                    out.push(b'%');
                    i += 1;
                }
            },
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_write(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD)
}

async fn handle(state: Arc<State>, req: Request) -> Response {
    let mut r = match dispatch(&state, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    r.headers_mut().insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    r
}

async fn dispatch(state: &Arc<State>, req: Request) -> ApiResult<Response> {
    if let Some(a) = &state.auth {
        a.check(req.headers()).await?;
    }
    let path = req.uri().path().to_string();
    let Some(route) = route(&path) else {
        return Err(
            ApiError::new(Code::NameInvalid, format!("no such endpoint {path}"))
                .with_status(StatusCode::NOT_FOUND),
        );
    };
    if state.opts.read_only && is_write(req.method()) {
        return Err(ApiError::new(
            Code::Denied,
            "this registry is read-only (--registry-read-only)",
        )
        .with_status(StatusCode::METHOD_NOT_ALLOWED));
    }
    let method = req.method().clone();
    let q = query(&req);
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let unsupported = || {
        Err(ApiError::new(
            Code::Unsupported,
            format!("{method} is not supported on {path}"),
        ))
    };
    match route {
        Route::Base => match method {
            Method::GET | Method::HEAD => Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                "{}",
            )
                .into_response()),
            _ => unsupported(),
        },
        Route::Catalog => match method {
            Method::GET => manifests::catalog(state, &q).await,
            _ => unsupported(),
        },
        Route::Tags(name) => {
            check_name(name)?;
            match method {
                Method::GET => manifests::tags(state, name, &q).await,
                _ => unsupported(),
            }
        }
        Route::Manifest(name, reference) => {
            check_name(name)?;
            let (name, reference) = (name.to_string(), reference.to_string());
            match method {
                Method::GET => manifests::get(state, &name, &reference, false).await,
                Method::HEAD => manifests::get(state, &name, &reference, true).await,
                Method::PUT => manifests::put(state, &name, &reference, req).await,
                Method::DELETE => manifests::delete(state, &name, &reference).await,
                _ => unsupported(),
            }
        }
        Route::Blob(name, digest) => {
            check_name(name)?;
            let (name, digest) = (name.to_string(), digest.to_string());
            match method {
                Method::GET => blobs::get(state, &name, &digest, range.as_deref(), false).await,
                Method::HEAD => blobs::get(state, &name, &digest, range.as_deref(), true).await,
                Method::DELETE => blobs::delete(state, &name, &digest).await,
                _ => unsupported(),
            }
        }
        Route::UploadStart(name) => {
            check_name(name)?;
            let name = name.to_string();
            match method {
                Method::POST => uploads::start(state, &name, req).await,
                _ => unsupported(),
            }
        }
        Route::Upload(name, id) => {
            check_name(name)?;
            let (name, id) = (name.to_string(), id.to_string());
            match method {
                Method::GET => uploads::status(state, &name, &id).await,
                Method::PATCH => uploads::patch(state, &name, &id, req).await,
                Method::PUT => uploads::put(state, &name, &id, req).await,
                Method::DELETE => uploads::cancel(state, &name, &id).await,
                _ => unsupported(),
            }
        }
        Route::Referrers(name, digest) => {
            check_name(name)?;
            let (name, digest) = (name.to_string(), digest.to_string());
            match method {
                Method::GET => manifests::referrers(state, &name, &digest, &q).await,
                _ => unsupported(),
            }
        }
    }
}

/// A response with no body and these headers.
pub(super) fn empty(status: StatusCode, headers: &[(&str, String)]) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            header::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            r.headers_mut().insert(k, v);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_found_from_the_end() {
        assert_eq!(route("/v2/"), Some(Route::Base));
        assert_eq!(route("/v2"), Some(Route::Base));
        assert_eq!(route("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(route("/v2/a/b/tags/list"), Some(Route::Tags("a/b")));
        assert_eq!(
            route("/v2/a/manifests/x/manifests/latest"),
            Some(Route::Manifest("a/manifests/x", "latest"))
        );
        assert_eq!(route("/v2/a/blobs/uploads/"), Some(Route::UploadStart("a")));
        assert_eq!(
            route("/v2/a/b/blobs/uploads/123"),
            Some(Route::Upload("a/b", "123"))
        );
        assert_eq!(
            route("/v2/a/blobs/sha256:00"),
            Some(Route::Blob("a", "sha256:00"))
        );
        assert_eq!(
            route("/v2/a/referrers/sha256:00"),
            Some(Route::Referrers("a", "sha256:00"))
        );
        assert_eq!(route("/v3/a/blobs/x"), None);
        assert_eq!(percent_decode("sha256%3Aab+c%2"), "sha256:ab+c%2");
    }
}
