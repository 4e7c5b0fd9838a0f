//! Per-host mail throttling: many workers deliver to many mail-exchange hosts; no host
//! gets more than 2 connections or more than one new connection per 100 ms, the fleet
//! opens at most 6 at once, and a host that answers `421` is penalized for a while.
//!
//! ```sh
//! cargo run -p palisade --example mail_throttle
//! PALISADE_REDIS_URL=redis://127.0.0.1:6379 cargo run -p palisade --all-features --example mail_throttle
//! ```

use std::time::Duration;

use palisade::{Decision, Palisade, Policy};

#[tokio::main]
async fn main() -> Result<(), palisade::Error> {
    let p = Palisade::from_env().await?;
    let throttle = p.throttle().namespace("smtp")?;
    let policy = Policy::builder()
        .global_cap(6)
        .key_cap(2)
        .min_interval(Duration::from_millis(100))
        .lease_ttl(Duration::from_secs(30))
        .build()?;
    let hosts = ["mx1.example.com", "mx2.example.net", "mx.example.org"];
    let mut tasks = Vec::new();
    for worker in 0..8usize {
        let throttle = throttle.clone();
        tasks.push(tokio::spawn(async move {
            let mut sent = 0;
            for n in 0..10usize {
                let host = hosts[(worker + n) % hosts.len()];
                loop {
                    match throttle.acquire(host, &policy).await?.value {
                        Decision::Acquired(permit) => {
                            // "Deliver": the third host greylists the first attempts.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            if host == "mx.example.org" && worker == 0 && n == 2 {
                                throttle.penalize(host, Duration::from_millis(500)).await?;
                                println!("worker {worker}: {host} said 421, penalized for 500 ms");
                            }
                            permit.release().await?;
                            sent += 1;
                            break;
                        }
                        Decision::Denied { retry_after, .. } => {
                            tokio::time::sleep(retry_after.min(Duration::from_millis(200))).await
                        }
                    }
                }
            }
            Ok::<_, palisade::Error>(sent)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.map_err(|e| palisade::Error::config(e.to_string()))??;
    }
    let s = throttle.stats();
    println!("delivered {total} messages; {} denials: {:?}", s.denied, s.denials);
    for host in hosts {
        let st = throttle.inspect(host).await?.value;
        println!(
            "{host}: {} leases, last acquisition {:?}",
            st.key_leases, st.last_acquired
        );
    }
    Ok(())
}
