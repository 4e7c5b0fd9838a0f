//! Exporting palisade's metrics to Prometheus. Installs metrics-exporter-prometheus's
//! HTTP listener, runs some work, then scrapes its own endpoint and prints palisade's
//! series (names and labels: `palisade::observe`). Runs with no Redis (local mode);
//! with `PALISADE_REDIS_URL` set it runs strict on Redis.
//!
//! ```sh
//! cargo run -p palisade --features metrics --example prometheus
//! PALISADE_METRICS_ADDR=127.0.0.1:9000 cargo run -p palisade --features metrics --example prometheus
//! ```

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use palisade::{Palisade, Rate};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Port 0 is not supported by the exporter's listener: ask the OS for a free port.
    let addr: SocketAddr = match std::env::var("PALISADE_METRICS_ADDR") {
        Ok(a) => a.parse()?,
        Err(_) => std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?,
    };
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()?;

    let p = Palisade::from_env().await?;
    let rate = Rate::per_second(5).build()?;
    for i in 0..20 {
        p.cache().set(&format!("k{i}"), b"v", Duration::from_secs(60)).await?;
        p.cache().get(&format!("k{i}")).await?;
        p.rate_limiter().limit("client-1", &rate).await?;
    }

    // What Prometheus would scrape.
    let mut conn = std::net::TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut scrape = String::new();
    conn.read_to_string(&mut scrape)?;
    let series: Vec<&str> = scrape.lines().filter(|l| l.starts_with("palisade_")).collect();
    for line in &series {
        println!("{line}");
    }
    if !series
        .iter()
        .any(|l| l.starts_with("palisade_ratelimit_decisions_total"))
    {
        return Err("the scrape has no palisade_ratelimit_decisions_total".into());
    }
    Ok(())
}
