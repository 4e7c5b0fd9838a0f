//! A request gate that fails closed: a rate-limited handler that refuses (503) when
//! Redis is down in strict mode, instead of silently letting everyone through.
//!
//! ```sh
//! PALISADE_REDIS_URL=redis://127.0.0.1:6379 cargo run -p palisade --all-features --example fail_closed_gate
//! ```
//! Stop Redis while it runs: requests are refused with 503 within the command
//! deadline, and served again when Redis is back.

use std::time::Duration;

use palisade::{Palisade, Rate, RateDecision, RateLimiter};

/// What an HTTP handler would answer.
async fn handle(limiter: &RateLimiter, client: &str) -> u16 {
    let rate = match Rate::per_second(5).burst(5).build() {
        Ok(r) => r,
        Err(_) => return 500,
    };
    match limiter.limit(client, &rate).await {
        Ok(t) => match t.value {
            RateDecision::Allowed { .. } => 200,
            RateDecision::Limited { .. } => 429,
        },
        // Strict mode: the shared limit cannot be checked, so nobody passes.
        Err(e) if e.is_unavailable() => 503,
        Err(_) => 500,
    }
}

#[tokio::main]
async fn main() -> Result<(), palisade::Error> {
    let p = Palisade::from_env().await?;
    println!("mode: {}", p.mode());
    let limiter = p.rate_limiter();
    let rounds: u32 = std::env::var("ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(20);
    for i in 0..rounds {
        let code = handle(&limiter, "client-a").await;
        println!("request {i}: {code}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
