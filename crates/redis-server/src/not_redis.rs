//! A peer that is not Redis: what a URL pointing at the wrong service reaches.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// A loopback listener that answers everything with bytes that are not RESP (an HTTP
/// status line, then garbage for every read). Stops accepting when dropped.
pub struct NotRedis {
    port: u16,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl NotRedis {
    /// Listens on a free loopback port.
    pub fn start() -> io::Result<NotRedis> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let acceptor = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    std::thread::spawn(move || answer_garbage(stream));
                }
            }
        });
        Ok(NotRedis {
            port,
            stop,
            acceptor: Some(acceptor),
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

fn answer_garbage(mut s: TcpStream) {
    let mut buf = [0u8; 4096];
    if s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").is_err() {
        return;
    }
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 || s.write_all(b"\xff\x00not RESP at all\r\n~~~\r\n").is_err() {
            return;
        }
    }
}

impl Drop for NotRedis {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so that the thread sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// A loopback listener that accepts every connection, answers nothing and records every
/// byte it receives: what a client sends to a port before any reply (a `rediss://` URL
/// pointing at a plain listener — the password must not be among those bytes).
pub struct Recorder {
    port: u16,
    stop: Arc<AtomicBool>,
    received: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl Recorder {
    /// Listens on a free loopback port.
    pub fn start() -> io::Result<Recorder> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stopping, sink) = (Arc::clone(&stop), Arc::clone(&received));
        let acceptor = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let sink = Arc::clone(&sink);
                let slot = {
                    let mut all = sink.lock().unwrap_or_else(|p| p.into_inner());
                    all.push(Vec::new());
                    all.len() - 1
                };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 {
                            return;
                        }
                        sink.lock().unwrap_or_else(|p| p.into_inner())[slot].extend_from_slice(&buf[..n]);
                    }
                });
            }
        });
        Ok(Recorder {
            port,
            stop,
            received,
            acceptor: Some(acceptor),
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bytes received so far, one entry per connection.
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.received.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}
