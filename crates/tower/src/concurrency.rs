//! [`ConcurrencyLayer`]: a fleet-wide cap on requests in flight, over the throttle.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

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
///   timeout layer fired), the permit is released then.
/// - While the request is in flight its lease is extended by the policy's lease TTL
///   every third of that TTL (on the tokio runtime the layer runs on), so a request
///   that outlives the TTL — a long download, a server-sent event stream — keeps its
///   slot. The TTL still bounds a holder that crashed (nothing extends its lease), and
///   one whose backend stayed unreachable longer than the TTL (its lease is gone; the
///   request goes on uncounted).
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

/// A request's permit while the request is in flight (see the layer's `# Behavior`).
enum Held {
    /// Owned by its renewal task, which is ended — and the permit released — when this
    /// is dropped.
    Renewed(tokio::task::JoinHandle<()>),
    /// No tokio runtime to renew on: held as granted.
    Plain(Permit),
}

impl Held {
    fn new(permit: Permit, ttl: Duration) -> Self {
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => Held::Renewed(rt.spawn(renew(permit, ttl))),
            Err(_) => Held::Plain(permit),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Held::Renewed(task) = self {
            // The task's future, and with it the permit, is dropped: the permit's drop
            // releases it.
            task.abort();
        }
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Held::Renewed(_) => f.write_str("Held(renewed)"),
            Held::Plain(permit) => f.debug_tuple("Held").field(permit).finish(),
        }
    }
}

/// Extends `permit`'s lease by `ttl` every third of it, until the lease is gone or the
/// task is ended. A failed extension (the backend unreachable) is tried again a third
/// later: the lease, still `ttl` long from the last success, covers two more tries.
async fn renew(mut permit: Permit, ttl: Duration) {
    let every = (ttl / 3).max(Duration::from_millis(1));
    loop {
        tokio::time::sleep(every).await;
        match permit.extend(ttl).await {
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(target: palisade_cache_core::EVENT_TARGET, error = %e.chain(), "a request's lease could not be extended; trying again");
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds the request's permit until it ends or is dropped.
    pub struct PermitBody<B> {
        #[pin]
        inner: B,
        permit: Option<Held>,
    }
}

impl<B> PermitBody<B> {
    fn new(inner: B, permit: Option<Held>) -> Self {
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
                Decision::Acquired(permit) => {
                    let held = Held::new(permit, layer.policy.lease_ttl);
                    inner.call(req).await?.map(|b| PermitBody::new(b, Some(held)))
                }
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
