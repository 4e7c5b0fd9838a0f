//! `doctor`, and building a `Palisade` from the arguments.

use palisade::{Error, ErrorKind, Mode, Palisade};
use serde_json::json;

use crate::args::Cli;
use crate::output::{Out, exit_code};

/// Every `PALISADE_*` setting of the environment first (deadlines, degraded-mode
/// settings…), then the flags over them.
pub(crate) async fn build(cli: &Cli) -> Result<Palisade, Error> {
    let mut b = Palisade::builder().with_env()?.tenant(&cli.tenant);
    if let Some(url) = cli.url() {
        b = b.redis_url(url);
    }
    pub(crate) fn set(p: &Option<std::path::PathBuf>) -> Option<&std::path::PathBuf> {
        p.as_ref().filter(|p| !p.as_os_str().is_empty())
    }
    if let Some(p) = set(&cli.password_file) {
        b = b.redis_password_file(p);
    }
    if let Some(p) = set(&cli.ca_file) {
        b = b.tls_ca_file(p);
    }
    if let (Some(c), Some(k)) = (set(&cli.client_cert), set(&cli.client_key)) {
        b = b.tls_client_cert(c, k);
    }
    if let Some(n) = cli.tls_server_name.as_deref().filter(|n| !n.trim().is_empty()) {
        b = b.tls_server_name(n);
    }
    if let Some(p) = set(&cli.sentinel_password_file) {
        b = b.sentinel_password_file(cli.sentinel_user.as_deref(), p);
    }
    if let Some(mode) = cli.mode()? {
        b = b.mode(mode);
    }
    b.build().await
}

/// `doctor`'s report. A store that cannot be reached, or refuses TLS or the
/// credentials, is its answer (on stdout, exit 2 or 77); a configuration that cannot
/// work is an error like any other (`Err`: one JSON object on stderr, exit 64).
pub(crate) async fn doctor(cli: &Cli) -> Result<Out, Error> {
    Ok(match build(cli).await {
        Ok(p) => {
            let d = p.doctor().await;
            let json = json!({
                "mode": d.mode.as_str(),
                "state": d.health.as_str(),
                "endpoint": d.endpoint,
                "server_version": d.server_version,
                "topology": d.topology,
                "tls": d.tls,
                "tls_server_name": d.tls_server_name,
                "user": d.user,
                "sentinel_service": d.sentinel_service,
                "connected_to": d.connected_to,
                "role": d.role,
                "round_trip_ms": d.round_trip.map(|r| r.as_secs_f64() * 1000.0),
                "can_serve": d.can_serve,
                "error": d.error,
                "contracts": d.contracts.iter().map(|c| json!({"contract": c.contract, "ok": c.error.is_none(), "error": c.error})).collect::<Vec<_>>(),
                "warnings": d.warnings,
                "dedicated_pool": d.dedicated_pool.map(|p| json!({
                    "max": p.max, "open": p.open, "idle": p.idle,
                    "exhausted": p.exhausted, "closed_broken": p.closed_broken,
                })),
            });
            let tls = match (d.tls, &d.tls_server_name) {
                (Some(true), Some(name)) => format!("TLS on (verified name {name})"),
                (Some(true), None) => "TLS on".to_owned(),
                (Some(false), _) => "TLS off".to_owned(),
                (None, _) => "-".to_owned(),
            };
            let sentinel = match (&d.sentinel_service, &d.connected_to) {
                (Some(service), at) => format!(
                    " · sentinel service {service}, primary {} ({})",
                    at.as_deref().unwrap_or("unknown"),
                    d.role.as_deref().unwrap_or("role unknown")
                ),
                (None, _) => String::new(),
            };
            let refused: String = d
                .contracts
                .iter()
                .filter_map(|c| {
                    c.error
                        .as_ref()
                        .map(|e| format!("\n  {} cannot be served: {e}", c.contract))
                })
                .collect();
            let warnings: String = d.warnings.iter().map(|w| format!("\n  warning: {w}")).collect();
            let text = format!(
                "mode {} · state {} · {} · {} · {} · user {} · redis {}{} · round trip {} · {}{refused}{warnings}",
                d.mode,
                d.health,
                d.endpoint.as_deref().unwrap_or("no network"),
                d.topology.as_deref().unwrap_or("-"),
                tls,
                d.user.as_deref().unwrap_or("default"),
                d.server_version.as_deref().unwrap_or("-"),
                sentinel,
                d.round_trip
                    .map_or("-".to_owned(), |r| format!("{:.2} ms", r.as_secs_f64() * 1000.0)),
                if d.can_serve { "can serve" } else { "CANNOT serve" },
            );
            Out {
                json,
                text,
                code: if d.can_serve { 0 } else { 2 },
            }
        }
        Err(e) if !e.is_unavailable() && e.kind() != ErrorKind::Auth => return Err(e),
        Err(e) => {
            let json = json!({
                "mode": cli.mode().ok().flatten().unwrap_or(Mode::default_for(cli.url().is_some())).as_str(),
                "state": "unavailable",
                "can_serve": false,
                "error": e.chain(),
                "error_kind": e.kind().as_str(),
            });
            Out {
                json,
                text: format!("CANNOT serve: {}", e.chain()),
                code: exit_code(&e),
            }
        }
    })
}
