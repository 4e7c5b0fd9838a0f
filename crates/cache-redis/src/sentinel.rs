//! Following a Sentinel failover.
//!
//! fred's Sentinel mode asks the sentinels for the primary and checks `ROLE` at every
//! (re)connect, but it reconnects only when its socket breaks. A planned failover
//! (`SENTINEL FAILOVER`) leaves the old primary up and accepting writes until the
//! sentinels reconfigure it — seconds later — and a paused primary keeps the socket
//! open. So palisade watches too:
//!
//! - one client per sentinel seed, subscribed to `+switch-master` (RESP3, so the same
//!   connection can also be asked questions);
//! - a poll every `sentinel_poll` of `SENTINEL GET-MASTER-ADDR-BY-NAME` on the first
//!   sentinel that answers, compared with where the data connection is;
//! - `READONLY`, `MASTERDOWN` and `NOREPLICAS` replies on the data connection.
//!
//! Each of these makes fred reconnect (`force_reconnection`), which asks the sentinels
//! again and checks `ROLE`; moves are spaced by at least [`MIN_MOVE_GAP`].
//!
//! ## The failover gate
//!
//! Sentinel promotes the replica first and announces `+switch-master` about a second
//! later; the old primary accepts writes until it is reconfigured. A write it
//! acknowledges in that window is lost when it resyncs from the new primary (measured:
//! about 150 of 350 acknowledged writes in a planned failover, before the gate). So as
//! soon as a sentinel announces that it is promoting a replica
//! (`+failover-state-send-slaveof-noone`, or `failover_in_progress` in the flags the
//! poll reads), every command fails at once with [`Error::Unavailable`] without being
//! sent, until the connection has moved to the primary `+switch-master` named (or the
//! failover was aborted, or [`MAX_GATE`] passed). Strict mode thus fails closed during
//! a failover instead of writing to a primary that is about to be demoted; degraded
//! mode serves locally, tagged, as in any outage.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::error::Error as FredError;
use fred::prelude::*;
use fred::types::RespVersion;
use palisade_cache_core::{Error, HostPort, Topology};
use tokio::task::JoinHandle;

use crate::RedisConfig;
use crate::config::FileCredentials;

/// The least time between two forced moves of the data connection.
pub(crate) const MIN_MOVE_GAP: Duration = Duration::from_millis(250);

/// The longest the failover gate stays closed without news from the sentinels.
pub(crate) const MAX_GATE: Duration = Duration::from_secs(10);

const SWITCH_MASTER: &str = "+switch-master";
const PROMOTING: &str = "+failover-state-send-slaveof-noone";
const ABORTS: [&str; 3] = [
    "-failover-abort-not-elected",
    "-failover-abort-no-good-slave",
    "-failover-abort-slave-timeout",
];

/// Whether a sentinel event's text is about `service`: `master <name> …`, `… @ <name> …`
/// or, for `+switch-master`, `<name> …`.
fn about(text: &str, service: &str) -> bool {
    let mut words = text.split_whitespace();
    let first = words.next();
    first == Some(service)
        || (first == Some("master") && words.next() == Some(service))
        || text.split(" @ ").nth(1).and_then(|t| t.split_whitespace().next()) == Some(service)
}

/// A closed gate: since when, and the primary that `+switch-master` named.
#[derive(Debug, Clone)]
struct Gate {
    since: Instant,
    expect: Option<HostPort>,
}

/// Replies that say the data connection is not on a writable primary.
const MOVE_REPLIES: [&str; 3] = ["READONLY", "MASTERDOWN", "NOREPLICAS"];

struct Shared {
    service: String,
    last_move: Mutex<Option<Instant>>,
    /// Where the data connection is (from its `on_reconnect`).
    current: Mutex<Option<HostPort>>,
    gate: Mutex<Option<Gate>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn close_gate(&self, expect: Option<HostPort>) {
        let mut gate = lock(&self.gate);
        match gate.as_mut() {
            Some(g) => {
                if expect.is_some() {
                    g.expect = expect;
                }
            }
            None => {
                tracing::warn!(
                    target: palisade_cache_core::EVENT_TARGET,
                    service = self.service.as_str(),
                    "Sentinel failover in progress: commands fail until the connection is on the new primary"
                );
                *gate = Some(Gate {
                    since: Instant::now(),
                    expect,
                });
            }
        }
    }

    fn open_gate(&self, why: &'static str) {
        if lock(&self.gate).take().is_some() {
            tracing::info!(
                target: palisade_cache_core::EVENT_TARGET,
                service = self.service.as_str(),
                why,
                "Sentinel failover over: commands flow again"
            );
        }
    }

    /// The data connection reconnected to `server`.
    fn reconnected(&self, server: HostPort) {
        *lock(&self.current) = Some(server.clone());
        let done = lock(&self.gate)
            .as_ref()
            .is_some_and(|g| g.expect.as_ref() == Some(&server));
        if done {
            self.open_gate("on the new primary");
        }
    }

    /// One sentinel event.
    fn on_event(&self, main: &Client, channel: &str, text: &str) {
        if !about(text, &self.service) {
            return;
        }
        if channel == PROMOTING {
            self.close_gate(None);
        } else if ABORTS.contains(&channel) {
            self.open_gate("failover aborted");
        } else if channel == SWITCH_MASTER {
            // `<name> <old ip> <old port> <new ip> <new port>`
            let w: Vec<&str> = text.split_whitespace().collect();
            let new = match (w.get(3), w.get(4).and_then(|p| p.parse().ok())) {
                (Some(host), Some(port)) => Some(HostPort::new(*host, port)),
                _ => None,
            };
            if lock(&self.current).as_ref() != new.as_ref() {
                self.close_gate(new);
                self.move_primary(main, "+switch-master");
            } else {
                self.open_gate("already on the new primary");
            }
        }
    }

    /// Makes the data connection reconnect (asking the sentinels), at most once per
    /// [`MIN_MOVE_GAP`].
    fn move_primary(&self, main: &Client, why: &'static str) {
        {
            let mut last = lock(&self.last_move);
            if last.is_some_and(|t| t.elapsed() < MIN_MOVE_GAP) {
                return;
            }
            *last = Some(Instant::now());
        }

        tracing::info!(
            target: palisade_cache_core::EVENT_TARGET,
            service = self.service.as_str(),
            why,
            "Sentinel: moving the connection to the current primary"
        );
        let main = main.clone();
        tokio::spawn(async move {
            let _ = main.force_reconnection().await;
        });
    }
}

/// The Sentinel watcher of one data connection.
pub(crate) struct Watcher {
    shared: Arc<Shared>,
    sentinels: Vec<Client>,
    poll: Duration,
    credentials: Option<Arc<FileCredentials>>,
}

impl Watcher {
    /// One watcher client per sentinel seed, with the sentinels' credentials and the
    /// same TLS settings as the data connection.
    pub(crate) fn new(config: &RedisConfig, credentials: Option<Arc<FileCredentials>>) -> Result<Self, Error> {
        let url = config.url();
        let Topology::Sentinel { service } = &url.topology else {
            return Err(Error::config("a Sentinel watcher needs a Sentinel URL"));
        };
        let data = config.fred_config_with(credentials.clone())?;
        let (username, password) = config.sentinel_credentials()?;
        let mut sentinels = Vec::with_capacity(url.hosts.len());
        for hp in &url.hosts {
            let mut c = data.clone();
            c.server = ServerConfig::new_centralized(hp.host.as_str(), hp.port);
            c.username = username.clone();
            c.password = password.as_ref().map(|p| p.expose().to_owned());
            c.database = None;
            c.version = RespVersion::RESP3;
            let client = config
                .builder(c, false)
                .build()
                .map_err(|e| Error::config(format!("Sentinel watcher: {}", e.details())))?;
            sentinels.push(client);
        }
        Ok(Watcher {
            shared: Arc::new(Shared {
                service: service.clone(),
                last_move: Mutex::new(None),
                current: Mutex::new(None),
                gate: Mutex::new(None),
            }),
            sentinels,
            poll: config.sentinel_poll,
            credentials,
        })
    }

    /// Starts the subscriptions and the poll; the tasks end when aborted (the
    /// connection's drop) and close the watcher clients.
    pub(crate) fn start(&self, main: Client) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        let shared = Arc::clone(&self.shared);
        let on_reconnect = main.on_reconnect(move |server| {
            let shared = Arc::clone(&shared);
            async move {
                shared.reconnected(HostPort::new(server.host.to_string(), server.port));
                Ok(())
            }
        });
        tasks.push(tokio::spawn(async move {
            let _ = on_reconnect.await;
        }));
        for sentinel in &self.sentinels {
            let handle = sentinel.connect();
            let shared = Arc::clone(&self.shared);
            let main_for_messages = main.clone();
            let messages = sentinel.on_message(move |msg| {
                let shared = Arc::clone(&shared);
                let main = main_for_messages.clone();
                async move {
                    let text = msg.value.as_string().unwrap_or_default();
                    shared.on_event(&main, &msg.channel, &text);
                    Ok(())
                }
            });
            let client = sentinel.clone();
            tasks.push(tokio::spawn(async move {
                // Subscribe on every (re)connect: a sentinel restarted forgets it.
                let mut reconnects = client.reconnect_rx();
                loop {
                    if client.wait_for_connect().await.is_ok() {
                        let mut channels = vec![SWITCH_MASTER, PROMOTING];
                        channels.extend(ABORTS);
                        let _ = client.subscribe(channels).await;
                    }
                    if reconnects.recv().await.is_err() {
                        break;
                    }
                }
                drop(messages);
                drop(handle);
            }));
        }
        let shared = Arc::clone(&self.shared);
        let sentinels = self.sentinels.clone();
        let poll = self.poll;
        let credentials = self.credentials.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Some(c) = &credentials {
                    // fred connects to the sentinels it learns too: they get the
                    // sentinels' credentials, not the data nodes'.
                    for hp in known_sentinels(&sentinels, &shared.service).await {
                        c.add_sentinel(hp);
                    }
                }
                let Some((primary, failing_over)) = ask_primary(&sentinels, &shared.service).await else {
                    continue;
                };
                if failing_over {
                    shared.close_gate(None);
                }
                let current = lock(&shared.current).clone();
                if current.as_ref().is_some_and(|c| *c != primary) {
                    shared.close_gate(Some(primary));
                    shared.move_primary(&main, "poll");
                } else if !failing_over && current.is_some() {
                    // The sentinels are done and the connection is where they say.
                    shared.open_gate("the sentinels agree with the connection");
                }
            }
        }));
        tasks
    }

    /// A reply that says the connection is not on a writable primary moves it.
    pub(crate) fn on_reply_error(&self, main: &Client, e: &FredError) {
        if MOVE_REPLIES.iter().any(|r| e.details().starts_with(r)) {
            self.shared.move_primary(main, "reply");
        }
    }

    /// Why commands must not be sent right now: a failover is in progress (see the
    /// module docs). `None` when they may.
    pub(crate) fn gate(&self) -> Option<String> {
        let mut gate = lock(&self.shared.gate);
        let g = gate.as_ref()?;
        if g.since.elapsed() > MAX_GATE {
            *gate = None;
            return None;
        }
        Some(format!(
            "a Sentinel failover of `{}` is in progress (for {:?}): nothing is sent until the connection \
             is on the new primary",
            self.shared.service,
            g.since.elapsed()
        ))
    }

    /// Where the data connection is, as its last (re)connect said.
    pub(crate) fn current(&self) -> Option<HostPort> {
        lock(&self.shared.current).clone()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        for client in &self.sentinels {
            let client = client.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(1), client.quit()).await;
                });
            }
        }
    }
}

/// The primary's address as the first sentinel that answers reports it, and whether
/// that sentinel is failing it over (`SENTINEL MASTER`'s `ip`, `port` and `flags`).
pub(crate) async fn ask_primary(sentinels: &[Client], service: &str) -> Option<(HostPort, bool)> {
    for s in sentinels.iter().filter(|s| s.is_connected()) {
        let reply: Result<std::collections::HashMap<String, String>, _> = s
            .custom(fred::cmd!("SENTINEL"), vec!["MASTER".to_owned(), service.to_owned()])
            .await;
        let Ok(fields) = reply else { continue };
        let port = fields.get("port").and_then(|p| p.parse().ok());
        if let (Some(host), Some(port)) = (fields.get("ip"), port) {
            let failing_over = fields.get("flags").is_some_and(|f| f.contains("failover_in_progress"));
            return Some((HostPort::new(host.clone(), port), failing_over));
        }
    }
    None
}

/// The other sentinels of `service`, as the first sentinel that answers knows them.
async fn known_sentinels(sentinels: &[Client], service: &str) -> Vec<HostPort> {
    for s in sentinels.iter().filter(|s| s.is_connected()) {
        let reply: Result<Vec<std::collections::HashMap<String, String>>, _> = s
            .custom(fred::cmd!("SENTINEL"), vec!["SENTINELS".to_owned(), service.to_owned()])
            .await;
        if let Ok(list) = reply {
            return list
                .iter()
                .filter_map(|m| Some(HostPort::new(m.get("ip")?.clone(), m.get("port")?.parse().ok()?)))
                .collect();
        }
    }
    Vec::new()
}
