//! One service, many tenants, one connection: each request names its tenant, and
//! `p.tenant(..)` hands out that tenant's cache, job store, throttle and rate limiter
//! over the same connection, supervisors and event stream. Tenants never see each
//! other's keys, and clearing one tenant's cache leaves the others alone.
//!
//! ```sh
//! cargo run -p palisade --example two_tenants
//! PALISADE_REDIS_URL=redis://127.0.0.1:6379 cargo run -p palisade --all-features --example two_tenants
//! ```

use std::time::Duration;

use palisade::{Palisade, Rate, RateDecision};

/// A request handler: the tenant comes with the request.
async fn verify(p: &Palisade, tenant: &str, token: &str) -> Result<String, palisade::Error> {
    let t = p.tenant(tenant)?;
    let rate = Rate::per_minute(60).burst(5).build()?;
    if let RateDecision::Limited { retry_after, .. } = t.rate_limiter().limit(token, &rate).await?.value {
        return Ok(format!("{tenant}: slow down, retry in {retry_after:?}"));
    }
    let cache = t.cache().namespace("verified")?;
    let seen = cache.get(token).await?;
    match seen.value {
        Some(v) => Ok(format!(
            "{tenant}: {token} already verified as {} ({})",
            String::from_utf8_lossy(&v),
            seen.provenance
        )),
        None => {
            cache
                .set(token, format!("user-of-{tenant}").as_bytes(), Duration::from_secs(300))
                .await?;
            Ok(format!("{tenant}: {token} verified now"))
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), palisade::Error> {
    let p = Palisade::from_env().await?;
    println!("mode: {}", p.mode());
    for (tenant, token) in [
        ("org-1", "tok-a"),
        ("org-2", "tok-a"),
        ("org-1", "tok-a"),
        ("org-2", "tok-b"),
    ] {
        println!("{}", verify(&p, tenant, token).await?);
    }
    // The same token under another tenant is another key: org-2 never saw org-1's
    // verification. Clearing org-1 leaves org-2 alone.
    let cleared = p.tenant("org-1")?.cache().namespace("verified")?.clear().await?.value;
    let still = p
        .tenant("org-2")?
        .cache()
        .namespace("verified")?
        .contains("tok-a")
        .await?
        .value;
    println!("cleared {cleared} of org-1's entries; org-2 still holds tok-a: {still}");
    let s = p.cache().stats();
    println!("one set of counters for the process: {} sets, {} hits", s.sets, s.hits);
    Ok(())
}
