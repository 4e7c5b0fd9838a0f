//! Every operation is one `tracing` span with the fields an OpenTelemetry exporter
//! reads, whatever the mode (here local; the Redis modes share the code path).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::{Mode, Palisade};
use tracing_subscriber::fmt::format::FmtSpan;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture() -> (Buffer, tracing::subscriber::DefaultGuard) {
    let buffer = Buffer::default();
    let out = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || out.clone())
        .with_ansi(false)
        .with_span_events(FmtSpan::CLOSE)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    (buffer, tracing::subscriber::set_default(subscriber))
}

/// The closed span of operation `name` (`cache.set`, …) in what `buffer` captured.
fn closed_span(buffer: &Buffer, name: &str) -> String {
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    text.lines()
        .filter(|l| l.contains("close"))
        .find(|l| l.contains(&format!("otel.name=palisade.{name} ")))
        .unwrap_or_else(|| panic!("no {name} span: {text}"))
        .to_owned()
}

#[tokio::test]
async fn each_operation_is_one_span_with_its_name_system_provenance_and_outcome() {
    let (buffer, _guard) = capture();
    let p = Palisade::builder().mode(Mode::LocalOnly).build().await.unwrap();
    p.cache().set("user-4711", b"v", Duration::from_secs(60)).await.unwrap();
    let set = closed_span(&buffer, "cache.set");
    for field in [
        "db.system=\"memory\"",
        "palisade.mode=\"local\"",
        "palisade.provenance=\"local\"",
        "palisade.outcome=\"ok\"",
    ] {
        assert!(set.contains(field), "{field} missing: {set}");
    }
    assert!(!set.contains("otel.status_code"), "{set}");
    assert!(!set.contains("user-4711"), "a key never goes into a span: {set}");
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_failed_operation_s_span_carries_its_error_kind_and_the_error_status() {
    let Some(mut server) = palisade_redis_server::env::private_server("spans_error") else {
        return;
    };
    let p = Palisade::builder()
        .mode(Mode::StrictDistributed)
        .redis_url(&server.url())
        .command_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    server.kill();
    let (buffer, _guard) = capture();
    let e = p.cache().get("k").await.unwrap_err();
    let get = closed_span(&buffer, "cache.get");
    for field in [
        "db.system=\"redis\"".to_owned(),
        "palisade.mode=\"strict\"".to_owned(),
        "palisade.provenance=\"none\"".to_owned(),
        format!("palisade.outcome=\"{}\"", e.kind().as_str()),
        "otel.status_code=\"ERROR\"".to_owned(),
    ] {
        assert!(get.contains(&field), "{field} missing: {get}");
    }
}
