//! The data plane's event loops: one thread per core, each a current-thread runtime that
//! accepts on its own copy of the data listener and serves its connections to their end. A
//! request, its upstream exchange and the pooled upstream connection it uses stay on one
//! thread, so relaying costs no cross-thread wake-ups. The admin plane, reloads and the
//! gateway's background work stay on the main runtime.

use std::cell::Cell;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

use super::Listener;

thread_local! {
    static SLOT: Cell<usize> = const { Cell::new(0) };
}

/// How many data-plane event loops run: one per core this process may use (CPU quotas
/// included).
pub fn count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The calling thread's slot for per-thread state: `1..=count()` on a data-plane event loop,
/// 0 on any other thread.
pub fn slot() -> usize {
    SLOT.with(Cell::get)
}

/// How long an event loop's last tasks (blocking file writes, say) may take once told to
/// exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Serve,
    /// Stop accepting and drain.
    Stop,
    /// Drop what is left and end the thread.
    Exit,
}

enum Event {
    Stopped,
    Drained,
    /// Its thread is about to end (its runtime is gone).
    Ended,
}

/// The running event loops.
pub(super) struct Workers {
    phase: watch::Sender<Phase>,
    events: mpsc::UnboundedReceiver<Event>,
    stopped: usize,
    drained: usize,
    ended: usize,
    /// Never joined: [`Workers::exit`] waits for [`Event::Ended`] with a bound instead, so a
    /// loop that cannot end cannot keep the process from exiting.
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts [`count`] event loops, each accepting on a copy of `listener` with the
    /// listener `plane` makes; `permits` is the connection budget they share.
    pub(super) fn start(
        listener: std::net::TcpListener,
        plane: &dyn Fn() -> Listener,
        permits: &Arc<Semaphore>,
    ) -> std::io::Result<Workers> {
        let (phase, _) = watch::channel(Phase::Serve);
        let (tx, events) = mpsc::unbounded_channel();
        let mut workers = Workers {
            phase,
            events,
            stopped: 0,
            drained: 0,
            ended: 0,
            threads: Vec::new(),
        };
        let n = count();
        let mut listener = Some(listener);
        for i in 0..n {
            // The last loop takes the listener itself, so it is closed once every loop has
            // dropped its copy.
            let own = match listener.take() {
                Some(l) if i + 1 < n => {
                    let copy = l.try_clone()?;
                    listener = Some(l);
                    copy
                }
                Some(l) => l,
                None => break,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let report = Report {
                tx: tx.clone(),
                stopped: false,
                drained: false,
            };
            let run = Loop {
                plane: plane(),
                permits: permits.clone(),
                phase: workers.phase.subscribe(),
                report,
            };
            let ended = EndGuard(tx.clone());
            let thread = std::thread::Builder::new()
                .name(format!("jitgate-data-{i}"))
                .spawn(move || {
                    let _ended = ended;
                    SLOT.with(|s| s.set(i + 1));
                    runtime.block_on(run.run(own));
                    runtime.shutdown_timeout(EXIT_TIMEOUT);
                })?;
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    async fn next(&mut self) -> bool {
        match self.events.recv().await {
            Some(Event::Stopped) => self.stopped += 1,
            Some(Event::Drained) => self.drained += 1,
            Some(Event::Ended) => self.ended += 1,
            None => return false,
        }
        true
    }

    /// Resolves if an event loop stops accepting before it was told to (it could not
    /// listen, or it panicked).
    pub(super) async fn ended(&mut self) {
        while self.stopped == 0 && self.next().await {}
    }

    /// Tells every loop to stop accepting; resolves once each has closed its listener.
    pub(super) async fn stop_accepting(&mut self) {
        self.phase.send_replace(Phase::Stop);
        while self.stopped < self.threads.len() && self.next().await {}
    }

    /// Resolves once every loop's connections have ended.
    pub(super) async fn drained(&mut self) {
        while self.drained < self.threads.len() && self.next().await {}
    }

    /// Ends the loops, dropping any connection still open, and waits (a bounded time) for
    /// their threads to end.
    pub(super) async fn exit(mut self) {
        self.phase.send_replace(Phase::Exit);
        let n = self.threads.len();
        let ended = async { while self.ended < n && self.next().await {} };
        if tokio::time::timeout(EXIT_TIMEOUT * 2, ended).await.is_err() {
            tracing::warn!("a data-plane event loop did not end in time");
        }
    }
}

/// Sends [`Event::Ended`] when its thread ends, panicking or not.
struct EndGuard(mpsc::UnboundedSender<Event>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        let _ = self.0.send(Event::Ended);
    }
}

impl Drop for Workers {
    /// Dropped without [`Workers::exit`] (the serving future was dropped): the loops still
    /// stop, so no listener outlives its gateway.
    fn drop(&mut self) {
        self.phase.send_replace(Phase::Exit);
    }
}

/// What one event loop runs.
struct Loop {
    plane: Listener,
    permits: Arc<Semaphore>,
    phase: watch::Receiver<Phase>,
    report: Report,
}

impl Loop {
    async fn run(self, listener: std::net::TcpListener) {
        let Loop {
            plane,
            permits,
            mut phase,
            mut report,
        } = self;
        match TcpListener::from_std(listener) {
            Ok(listener) => {
                tokio::select! {
                    () = plane.accept_loop(&listener, permits) => {}
                    _ = phase.wait_for(|p| *p >= Phase::Stop) => {}
                }
            }
            Err(e) => tracing::error!("a data-plane event loop cannot listen: {e}"),
        }
        report.stopped();
        // Told to exit before draining (shutdown_grace elapsed, or `Workers` dropped): what
        // is still open is dropped with the runtime.
        tokio::select! {
            () = plane.graceful.shutdown() => report.drained(),
            _ = phase.wait_for(|p| *p == Phase::Exit) => return,
        }
        let _ = phase.wait_for(|p| *p == Phase::Exit).await;
    }
}

/// Tells the main runtime how a loop is doing; whatever was not told by the time it is
/// dropped (a panic unwinding) is told then, so shutdown never waits on a dead loop.
struct Report {
    tx: mpsc::UnboundedSender<Event>,
    stopped: bool,
    drained: bool,
}

impl Report {
    fn stopped(&mut self) {
        if !std::mem::replace(&mut self.stopped, true) {
            let _ = self.tx.send(Event::Stopped);
        }
    }

    fn drained(&mut self) {
        if !std::mem::replace(&mut self.drained, true) {
            let _ = self.tx.send(Event::Drained);
        }
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        self.stopped();
        self.drained();
    }
}
