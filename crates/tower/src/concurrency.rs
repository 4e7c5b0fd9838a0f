//! [`ConcurrencyLayer`]: a fleet-wide cap on requests in flight, over the throttle.

use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use palisade_cache_core::Provenance;
use palisade_throttle::{Decision, Permit, Policy, Throttle, ThrottleBackend};

use crate::{KeyExtractor, PROVENANCE, ResponseFuture, error_response, refusal};

/// The header naming the gate that refused a request (`global_cap`, `key_cap`,
/// `min_interval`, `penalty`, `restart_hold`).
pub const DENY_REASON: HeaderName = HeaderName::from_static("palisade-deny-reason");

/// A [`tower_layer::Layer`] that holds a throttle permit for each request's lifetime:
/// at most the policy's `global_cap` requests in flight across the fleet, `key_cap`
/// per key, spaced by `min_interval`.
///
/// # Behavior
///
/// - A request takes a permit (one atomic step over every gate) before the inner
///   service sees it. The permit is held until the response body has ended — its last
///   frame read, or the body dropped — so a streamed response counts as in flight while
///   it streams; if the request's future is dropped first (the client went away, a
///   timeout layer fired), the permit is released then. The lease TTL of the policy
///   bounds a holder that crashed.
/// - Refused: `429` with `retry-after` (seconds, rounded up) and
///   [`DENY_REASON`]; strict mode without Redis: `503` with `retry-after`, never a
///   pass-through; degraded-mode answers carry [`PROVENANCE`].
/// - A request the extractor cannot key is refused with `400` (or let through
///   uncapped with [`ConcurrencyLayer::allow_unkeyed`]).
#[derive(Clone)]
pub struct ConcurrencyLayer<B, K> {
    throttle: Throttle<B>,
    policy: Policy,
    key: K,
    allow_unkeyed: bool,
}

impl<B: ThrottleBackend, K: KeyExtractor> ConcurrencyLayer<B, K> {
    /// Caps requests in flight by `policy`, per key `key` gives, through `throttle`.
    pub fn new(throttle: Throttle<B>, policy: Policy, key: K) -> Self {
        ConcurrencyLayer {
            throttle,
            policy,
            key,
            allow_unkeyed: false,
        }
    }

    /// Lets a request the extractor cannot key through uncapped (default: `400`).
    pub fn allow_unkeyed(mut self, allow: bool) -> Self {
        self.allow_unkeyed = allow;
        self
    }
}

impl<S, B: ThrottleBackend, K: KeyExtractor> tower_layer::Layer<S> for ConcurrencyLayer<B, K> {
    type Service = Concurrency<S, B, K>;
    fn layer(&self, inner: S) -> Self::Service {
        Concurrency {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`ConcurrencyLayer`] wraps around `S`.
#[derive(Clone)]
pub struct Concurrency<S, B, K> {
    inner: S,
    layer: ConcurrencyLayer<B, K>,
}

pin_project_lite::pin_project! {
    /// A response body that holds the request's permit until it ends or is dropped.
    pub struct PermitBody<B> {
        #[pin]
        inner: B,
        permit: Option<Permit>,
    }
}

impl<B> PermitBody<B> {
    fn new(inner: B, permit: Option<Permit>) -> Self {
        PermitBody { inner, permit }
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for PermitBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PermitBody")
            .field("inner", &self.inner)
            .field("permit", &self.permit)
            .finish()
    }
}

impl<B: Default> Default for PermitBody<B> {
    fn default() -> Self {
        PermitBody::new(B::default(), None)
    }
}

impl<B: Body> Body for PermitBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = this.inner.poll_frame(cx);
        if let Poll::Ready(None) = frame {
            // The body ended: the request is no longer in flight (the drop releases).
            this.permit.take();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<S, B, K, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for Concurrency<S, B, K>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: ThrottleBackend,
    K: KeyExtractor,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<PermitBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        let (parts, body) = req.into_parts();
        let key = layer.key.key(&parts);
        let req = Request::from_parts(parts, body);
        Box::pin(async move {
            let Some(key) = key else {
                if layer.allow_unkeyed {
                    return Ok(inner.call(req).await?.map(|b| PermitBody::new(b, None)));
                }
                return Ok(refusal(StatusCode::BAD_REQUEST, None));
            };
            let decision = match layer.throttle.acquire(&key, &layer.policy).await {
                Ok(d) => d,
                Err(e) => return Ok(error_response(&e)),
            };
            let provenance = decision.provenance;
            let mut res = match decision.value {
                // Held by this future until the response exists, then by its body.
                Decision::Acquired(permit) => inner.call(req).await?.map(|b| PermitBody::new(b, Some(permit))),
                Decision::Denied { reason, retry_after } => {
                    let mut res = refusal(StatusCode::TOO_MANY_REQUESTS, Some(retry_after));
                    res.headers_mut()
                        .insert(DENY_REASON, HeaderValue::from_static(reason.as_str()));
                    res
                }
            };
            if provenance != Provenance::Distributed {
                res.headers_mut()
                    .insert(PROVENANCE, HeaderValue::from_static(provenance.as_str()));
            }
            Ok(res)
        })
    }
}
