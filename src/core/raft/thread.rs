//! The Raft thread: one OS thread running a current-thread tokio runtime
//! that drives both the Raft task and the peer transport's tasks (the QUIC
//! endpoint, its connections and the per-peer streams).
//!
//! Why one thread: a message between members used to wake three threads
//! on each side (the Raft thread handing it to a tokio worker, the
//! receiver's worker woken by the UDP packet, that worker waking the
//! receiver's Raft thread). On a VM whose idle vCPUs are slow to wake,
//! those hops were most of a lightly loaded put's latency. Here a packet
//! wakes the receiver's Raft thread itself, which decrypts it, steps it and
//! answers, and the sender's Raft thread writes its messages before it
//! fsyncs (raft-rs lib.rs, Ready order: messages first, then persist).
//!
//! The thread starts before the Raft task exists, so that the transport
//! can be bound on it and serve a joining member's bootstrap; the task is
//! then handed over with [`RaftThread::run`]. While the task waits for
//! events it drives the transport ([`Runtime::block_on`]); while it applies
//! or fsyncs, the transport waits: one Ready's work, whose committed
//! entries are bounded (`MAX_COMMITTED_PER_READY`, for the Ready and for
//! its light ready), while a snapshot's
//! copy-in runs on the blocking pool and the thread keeps driving. A
//! snapshot's streaming and staging run on the main runtime; the packets
//! of a received snapshot's connection are still decrypted here.

use tokio::runtime::{Handle, Runtime};
use tokio::sync::oneshot;

/// What the Raft thread runs once handed over: the Raft task's loop, given
/// the runtime to drive while it waits.
pub type Work = Box<dyn FnOnce(&Runtime) + Send>;

/// The Raft thread and its runtime.
pub struct RaftThread {
    /// Spawns onto the thread's runtime (the transport's tasks).
    handle: Handle,
    /// Hands the Raft task over.
    work: Option<oneshot::Sender<Work>>,
    /// Ends the thread once the task is done (dropped: ends it too).
    exit: Option<oneshot::Sender<()>>,
    /// The OS thread.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RaftThread {
    /// Starts the thread named `raft` with its runtime (I/O and timers
    /// enabled). Until [`Self::run`] it drives only what is spawned on
    /// [`Self::handle`].
    ///
    /// # Errors
    /// The runtime or the thread cannot be created.
    pub fn spawn() -> anyhow::Result<Self> {
        let (work_tx, work_rx) = oneshot::channel::<Work>();
        let (exit_tx, exit_rx) = oneshot::channel::<()>();
        let (handle_tx, handle_rx) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("raft".into())
            .spawn(move || {
                // Built here, so that it is also dropped here: a runtime
                // must not be dropped inside another one's task.
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(rt.handle().clone()));
                if let Ok(work) = rt.block_on(work_rx) {
                    work(&rt);
                }
                // Keep the transport going until the server has closed it.
                let _ = rt.block_on(exit_rx);
            })?;
        let handle = handle_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("the raft thread ended at start"))?
            .map_err(|e| anyhow::anyhow!("cannot build the raft thread's runtime: {e}"))?;
        Ok(Self {
            handle,
            work: Some(work_tx),
            exit: Some(exit_tx),
            thread: Some(thread),
        })
    }

    /// The thread's runtime, for spawning the transport's tasks on it.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Hands `work` (the Raft task) to the thread; it runs once.
    ///
    /// # Errors
    /// The thread has ended, or was handed work already.
    pub fn run(&mut self, work: Work) -> anyhow::Result<()> {
        self.work
            .take()
            .ok_or_else(|| anyhow::anyhow!("the raft thread runs a task already"))?
            .send(work)
            .map_err(|_| anyhow::anyhow!("the raft thread has ended"))
    }

    /// Waits for the Raft task to end (send it `Event::Shutdown` first),
    /// then ends the thread and its runtime: call it once the transport
    /// has closed its connections (`Transport::close`).
    pub async fn finish(mut self) {
        if let Some(exit) = self.exit.take() {
            let _ = exit.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for RaftThread {
    /// Without [`Self::finish`] (the server returning an error): the
    /// thread is not waited for; it ends at once if no task was handed
    /// over, otherwise once that task ends.
    fn drop(&mut self) {
        self.work.take();
        self.exit.take();
    }
}
