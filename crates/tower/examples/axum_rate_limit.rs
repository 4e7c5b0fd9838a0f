//! An axum service behind palisade's fleet-wide rate limit: 3 requests per hour per
//! `x-api-key`, `429` with `retry-after` beyond, `503` if strict mode loses Redis.
//!
//! Runs in the mode the environment says (`PALISADE_MODE`, `PALISADE_REDIS_URL`; local
//! without them), sends itself five requests and prints what came back.
//!
//! ```text
//! cargo run -p palisade-tower --example axum_rate_limit
//! ```

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http::HeaderName;
use palisade::{Palisade, Rate};
use palisade_tower::{Header, RateLimitLayer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let p = Palisade::from_env().await?;
    let rate = Rate::per(3, Duration::from_secs(3600)).burst(3).build()?;
    let layer = RateLimitLayer::new(p.rate_limiter(), rate, Header(HeaderName::from_static("x-api-key")));
    let app = Router::new().route("/", get(|| async { "hello" })).layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    for i in 1..=5 {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: example\r\nx-api-key: demo\r\nConnection: close\r\n\r\n")
            .await?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).await?;
        let head = answer.split("\r\n\r\n").next().unwrap_or_default();
        let status = head.lines().next().unwrap_or_default();
        let limit = head
            .lines()
            .filter(|l| {
                l.to_ascii_lowercase().starts_with("ratelimit") || l.to_ascii_lowercase().starts_with("retry-after")
            })
            .collect::<Vec<_>>()
            .join(" · ");
        println!("request {i}: {status} · {limit}");
    }
    Ok(())
}
