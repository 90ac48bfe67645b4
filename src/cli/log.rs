//! A non-blocking log writer for `serve`: the runtime threads hand each formatted line to a bounded queue and
//! one dedicated thread writes it to stderr, so a slow or blocked stderr (a full pipe to the node's log
//! collector) never stalls a review. When the queue is full, lines are dropped and counted, and the count is
//! written once the writer catches up; nothing blocks.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Lines waiting for stderr at most; beyond this they are dropped (and counted).
const QUEUE_LINES: usize = 16 * 1024;

/// What the writer thread gets: a line, or a request to say when everything before it is written.
enum Msg {
    Line(Vec<u8>),
    Flush(SyncSender<()>),
}

/// Hands lines to the writer thread.
#[derive(Clone)]
pub struct NonBlocking {
    queue: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

/// The process's writer, for [`flush`] at exit.
static WRITER: OnceLock<NonBlocking> = OnceLock::new();

/// Waits (at most 2 s) until every line logged so far is on stderr: `serve` calls it before exiting, so the
/// last lines of a shutdown are not lost with the writer thread.
pub fn flush() {
    let Some(w) = WRITER.get() else { return };
    let (done, wait) = sync_channel(1);
    if w.queue.send(Msg::Flush(done)).is_ok() {
        let _ = wait.recv_timeout(Duration::from_secs(2));
    }
}

impl NonBlocking {
    /// Starts the writer thread on stderr.
    pub fn stderr() -> Self {
        let (queue, lines) = sync_channel::<Msg>(QUEUE_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let lost = dropped.clone();
        let spawned = std::thread::Builder::new().name("pullguard-log".into()).spawn(move || {
            let mut err = std::io::stderr().lock();
            for msg in lines {
                let n = lost.swap(0, Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(err, "{{\"level\":\"WARN\",\"message\":\"log queue full: {n} lines dropped\"}}");
                }
                match msg {
                    Msg::Line(line) => _ = err.write_all(&line),
                    Msg::Flush(done) => {
                        let _ = err.flush();
                        let _ = done.try_send(());
                    }
                }
            }
        });
        if spawned.is_err() {
            // No thread: every line is dropped and counted rather than written on a runtime thread.
            eprintln!("pullguard: cannot start the log writer thread; logs are dropped");
        }
        let w = Self { queue, dropped };
        let _ = WRITER.set(w.clone());
        w
    }
}

/// One event's bytes; sent whole when tracing drops it after formatting.
pub struct Line {
    buf: Vec<u8>,
    to: NonBlocking,
}

impl Write for Line {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let buf = std::mem::take(&mut self.buf);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.to.queue.try_send(Msg::Line(buf)) {
            self.to.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for NonBlocking {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { buf: Vec::with_capacity(256), to: self.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let (queue, _lines) = sync_channel::<Msg>(1);
        let w = NonBlocking { queue, dropped: Arc::default() };
        for _ in 0..3 {
            let mut line = tracing_subscriber::fmt::MakeWriter::make_writer(&w);
            line.write_all(b"x\n").unwrap();
        }
        assert_eq!(w.dropped.load(Ordering::Relaxed), 2, "one fits, two are dropped; nothing blocked");
    }
}
