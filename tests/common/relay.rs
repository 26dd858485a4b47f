//! A TCP relay in front of a real server (Redis) that can lose the timing of one answer: when
//! the client sends bytes containing a pattern, the server's next answer on that connection is
//! held back for a while. The command itself reaches the server at once, so its effect lands;
//! only the client's view of it is late. This is how "a store write that landed but whose
//! answer timed out" is produced without a mock.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A pattern to watch for and how late to deliver the answer that follows it (once).
type Trap = Arc<Mutex<Option<(Vec<u8>, Duration)>>>;
/// A connection's pending delay for its next answer.
type Stall = Arc<Mutex<Option<Duration>>>;

/// The relay; it keeps relaying until the test process ends.
pub struct Relay {
    /// The port clients connect to.
    pub port: u16,
    trap: Trap,
    sprung: Arc<AtomicUsize>,
}

impl Relay {
    /// Relays 127.0.0.1:<port> to `target`.
    pub fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let port = listener.local_addr().expect("relay addr").port();
        let trap: Trap = Arc::default();
        let sprung = Arc::new(AtomicUsize::new(0));
        let (t, s) = (trap.clone(), sprung.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                let stall: Stall = Arc::default();
                let (t1, st1) = (t.clone(), stall.clone());
                std::thread::spawn(move || client_to_server(client, s2, &t1, &st1));
                let s1 = s.clone();
                std::thread::spawn(move || server_to_client(server, c2, &stall, &s1));
            }
        });
        Relay { port, trap, sprung }
    }

    /// The first time (from now on) a client sends `pattern`, the server's next answer on that
    /// connection reaches the client `delay` late.
    pub fn delay_answer_to(&self, pattern: &[u8], delay: Duration) {
        *self.trap.lock().expect("trap") = Some((pattern.to_vec(), delay));
    }

    /// How many answers were held back so far.
    pub fn sprung(&self) -> usize {
        self.sprung.load(Ordering::SeqCst)
    }
}

fn client_to_server(mut from: TcpStream, mut to: TcpStream, trap: &Trap, stall: &Stall) {
    let mut buf = [0u8; 16 * 1024];
    let mut window: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
        };
        // Keep the end of the previous chunk, so a pattern split across reads is seen.
        window.extend_from_slice(&buf[..n]);
        if let Ok(mut armed) = trap.lock() {
            let hit = armed.as_ref().is_some_and(|(p, _)| {
                !p.is_empty() && window.windows(p.len()).any(|w| w == p.as_slice())
            });
            if hit {
                if let (Some((_, delay)), Ok(mut s)) = (armed.take(), stall.lock()) {
                    *s = Some(delay);
                }
            }
        }
        let keep_from = window.len().saturating_sub(256);
        window.drain(..keep_from);
        if to.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

fn server_to_client(mut from: TcpStream, mut to: TcpStream, stall: &Stall, sprung: &AtomicUsize) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
        };
        let delay = stall.lock().ok().and_then(|mut s| s.take());
        if let Some(delay) = delay {
            sprung.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(delay);
        }
        if to.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}
