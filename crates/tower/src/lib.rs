#![doc = include_str!("../README.md")]

mod concurrency;
mod key;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use palisade_cache_core::{Error, Provenance};
use palisade_throttle::{Rate, RateDecision, RateLimiter, ThrottleBackend};

pub use concurrency::{Concurrency, ConcurrencyLayer, DENY_REASON, PermitBody};
pub use key::{ClientIp, DEFAULT_IPV6_PREFIX, Global, Header, KeyExtractor, PeerIp, RouteAnd};

/// The header naming where a decision came from when it was not Redis
/// (`local_degraded`: degraded mode's announced local fallback).
pub const PROVENANCE: HeaderName = HeaderName::from_static("palisade-provenance");

/// A [`tower_layer::Layer`] that limits each request by its key with palisade's GCRA
/// rate limiter. See the crate docs for the `# Behavior`.
#[derive(Clone)]
pub struct RateLimitLayer<B, K> {
    limiter: RateLimiter<B>,
    rate: Rate,
    key: K,
    allow_unkeyed: bool,
    legacy_headers: bool,
}

impl<B: ThrottleBackend, K: KeyExtractor> RateLimitLayer<B, K> {
    /// Limits requests to `rate` per key `key` gives, through `limiter`.
    pub fn new(limiter: RateLimiter<B>, rate: Rate, key: K) -> Self {
        RateLimitLayer {
            limiter,
            rate,
            key,
            allow_unkeyed: false,
            legacy_headers: false,
        }
    }

    /// Lets a request the extractor cannot key through unlimited (default: refused
    /// with `400 Bad Request`, never let through silently).
    pub fn allow_unkeyed(mut self, allow: bool) -> Self {
        self.allow_unkeyed = allow;
        self
    }

    /// Also sends the common `x-ratelimit-limit`, `x-ratelimit-remaining` and
    /// `x-ratelimit-reset` headers (default: only the IETF `RateLimit-Policy` and
    /// `RateLimit`).
    pub fn legacy_headers(mut self, on: bool) -> Self {
        self.legacy_headers = on;
        self
    }
}

impl<S, B: ThrottleBackend, K: KeyExtractor> tower_layer::Layer<S> for RateLimitLayer<B, K> {
    type Service = RateLimit<S, B, K>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`RateLimitLayer`] wraps around `S`.
#[derive(Clone)]
pub struct RateLimit<S, B, K> {
    inner: S,
    layer: RateLimitLayer<B, K>,
}

/// The future of [`RateLimit`]: the limiter's decision, then the inner service.
pub type ResponseFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

/// Seconds, rounded up (a `retry-after` of 0 would invite an immediate retry).
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

fn value(v: impl ToString) -> HeaderValue {
    // Digits and the structured-field syntax below are always valid header values.
    HeaderValue::from_str(&v.to_string()).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

impl<B, K> RateLimitLayer<B, K> {
    /// `RateLimit-Policy`, `RateLimit` (and the legacy trio) for `d`.
    fn headers(&self, d: &RateDecision, headers: &mut HeaderMap) {
        let window = ceil_secs(self.rate.emission.saturating_mul(self.rate.burst));
        let reset = ceil_secs(d.reset_after());
        headers.insert(
            HeaderName::from_static("ratelimit-policy"),
            value(format!("\"palisade\";q={};w={window}", d.limit())),
        );
        headers.insert(
            HeaderName::from_static("ratelimit"),
            value(format!("\"palisade\";r={};t={reset}", d.remaining())),
        );
        if self.legacy_headers {
            headers.insert(HeaderName::from_static("x-ratelimit-limit"), value(d.limit()));
            headers.insert(HeaderName::from_static("x-ratelimit-remaining"), value(d.remaining()));
            headers.insert(HeaderName::from_static("x-ratelimit-reset"), value(reset));
        }
    }
}

fn refusal<R: Default>(status: StatusCode, retry_after: Option<Duration>) -> Response<R> {
    let mut res = Response::new(R::default());
    *res.status_mut() = status;
    if let Some(d) = retry_after {
        res.headers_mut()
            .insert(http::header::RETRY_AFTER, value(ceil_secs(d).max(1)));
    }
    res
}

/// The answer to a limiter error: an outage is `503` with `retry-after` (strict mode
/// never lets a request through unlimited); bad input (an oversized key) is `400`;
/// anything else `500`.
fn error_response<R: Default>(e: &Error) -> Response<R> {
    if e.is_unavailable() {
        refusal(StatusCode::SERVICE_UNAVAILABLE, Some(Duration::from_secs(1)))
    } else if e.kind() == palisade_cache_core::ErrorKind::InvalidInput {
        refusal(StatusCode::BAD_REQUEST, None)
    } else {
        refusal(StatusCode::INTERNAL_SERVER_ERROR, None)
    }
}

impl<S, B, K, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for RateLimit<S, B, K>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: ThrottleBackend,
    K: KeyExtractor,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The clone that was polled ready serves this request (tower's pattern).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        let (parts, body) = req.into_parts();
        let key = layer.key.key(&parts);
        let req = Request::from_parts(parts, body);
        Box::pin(async move {
            let Some(key) = key else {
                if layer.allow_unkeyed {
                    return inner.call(req).await;
                }
                return Ok(refusal(StatusCode::BAD_REQUEST, None));
            };
            let decision = match layer.limiter.limit(&key, &layer.rate).await {
                Ok(d) => d,
                Err(e) => return Ok(error_response(&e)),
            };
            let mut res = match decision.value {
                RateDecision::Allowed { .. } => inner.call(req).await?,
                RateDecision::Limited { retry_after, .. } => refusal(StatusCode::TOO_MANY_REQUESTS, Some(retry_after)),
            };
            layer.headers(&decision.value, res.headers_mut());
            if decision.provenance != Provenance::Distributed {
                res.headers_mut()
                    .insert(PROVENANCE, HeaderValue::from_static(decision.provenance.as_str()));
            }
            Ok(res)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
        assert_eq!(ceil_secs(Duration::MAX), u64::MAX, "saturates, never overflows");
        let r: Response<()> = refusal(StatusCode::TOO_MANY_REQUESTS, Some(Duration::ZERO));
        assert_eq!(r.headers()[http::header::RETRY_AFTER], "1");
    }
}
