//! What the HTTP tests share: one HTTP/1.1 request over a fresh TCP connection.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Status and headers (lower-cased names) of one `GET /` with `x-client: client`.
pub(crate) async fn get_as(addr: std::net::SocketAddr, client: &str) -> (u16, HashMap<String, String>, String) {
    get_path_as(addr, "/", client).await
}

/// [`get_as`] of `path`.
pub(crate) async fn get_path_as(
    addr: std::net::SocketAddr,
    path: &str,
    client: &str,
) -> (u16, HashMap<String, String>, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nx-client: {client}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut raw))
        .await
        .expect("an answer in time")
        .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}
