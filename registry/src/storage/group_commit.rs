//! Group commit: many writers share one flush.
//!
//! The changes to a flushed resource (the journal file, a directory) are counted as they
//! are made. A writer waits until a flush that *started after* its change has ended. While
//! one flush runs, every change made meanwhile waits for the next one, which then covers
//! all of them at once; the first waiter to find no flush running runs it on its own
//! thread. Both the journal and the directory fsyncs of [`super::durable`] go through here.

use std::io;
use std::sync::{Condvar, Mutex, MutexGuard};

/// What the group commit needs of its owner's state; the rest of that state is the owner's.
pub(crate) trait Flushed {
    /// What a flush takes from the state as it starts.
    type Pending;

    fn flushes(&mut self) -> &mut Flushes;

    /// Starts a flush: the number of changes it covers (all made so far) and what it needs.
    fn begin_flush(&mut self) -> (u64, Self::Pending);

    /// The flush that `begin_flush` started with `pending` ended, `ok` or not.
    fn end_flush(&mut self, pending: Self::Pending, ok: bool);
}

/// The flush progress of one resource.
#[derive(Default)]
pub(crate) struct Flushes {
    /// Changes an ended flush (or a checkpoint) has made durable.
    synced: u64,
    running: bool,
    /// Flushes started.
    attempts: u64,
    /// The last failed flush: reported to the writers who waited for it; later writers try
    /// again.
    failed: Option<Failure>,
}

impl Flushes {
    pub(crate) fn synced(&self) -> u64 {
        self.synced
    }

    pub(crate) fn running(&self) -> bool {
        self.running
    }

    /// Flushes started so far.
    #[cfg(test)]
    pub(crate) fn attempts(&self) -> u64 {
        self.attempts
    }

    /// The first `changes` are durable by other means (a checkpoint): no waiter for them
    /// needs a flush, and an earlier failure no longer matters.
    pub(crate) fn made_durable(&mut self, changes: u64) {
        self.synced = self.synced.max(changes);
        self.failed = None;
    }
}

/// A failed flush.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    attempt: u64,
    /// The changes it was to make durable.
    covers: u64,
    kind: io::ErrorKind,
    message: String,
}

impl Failure {
    /// The failure as an error of `what` (e.g. "flushing the journal").
    pub(crate) fn to_error(&self, what: &str) -> io::Error {
        io::Error::new(self.kind, format!("{what}: {}", self.message))
    }
}

/// A resource's state behind a lock, with the wake-ups of its group commit.
pub(crate) struct GroupCommit<S> {
    state: Mutex<S>,
    ended: Condvar,
    /// Wakes async waiters when a flush ends, so they can wait for a flush someone else
    /// runs without holding a blocking thread.
    ended_async: tokio::sync::Notify,
}

impl<S: Default> Default for GroupCommit<S> {
    fn default() -> Self {
        GroupCommit::new(S::default())
    }
}

impl<S> GroupCommit<S> {
    pub(crate) fn new(state: S) -> Self {
        GroupCommit {
            state: Mutex::new(state),
            ended: Condvar::new(),
            ended_async: tokio::sync::Notify::new(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, S> {
        self.state.lock().expect("group commit state")
    }

    /// Wakes every waiter, sync and async: call after changing [`Flushes`] by other means.
    pub(crate) fn notify_ended(&self) {
        self.ended.notify_all();
        self.ended_async.notify_waiters();
    }
}

impl<S: Flushed> GroupCommit<S> {
    /// Waits while a flush runs, so the caller may change what it would write.
    pub(crate) fn wait_idle<'a>(&'a self, mut s: MutexGuard<'a, S>) -> MutexGuard<'a, S> {
        while s.flushes().running {
            s = self.ended.wait(s).expect("group commit state");
        }
        s
    }

    /// Waits, without holding a thread, while a flush someone else started runs: true once
    /// change `mark` is durable, false when no flush runs and the caller has to run one
    /// ([`GroupCommit::wait_durable`], which blocks).
    pub(crate) async fn join_running(&self, mark: u64) -> bool {
        loop {
            // Enabled before the look at the state, so an end in between is not missed.
            let ended = self.ended_async.notified();
            let mut ended = std::pin::pin!(ended);
            ended.as_mut().enable();
            {
                let mut s = self.lock();
                let f = s.flushes();
                if f.synced >= mark {
                    return true;
                }
                if !f.running {
                    return false;
                }
            }
            ended.await;
        }
    }

    /// Waits until change number `mark` is durable, calling `flush` (without the lock)
    /// when no flush runs. A failed flush is returned to every waiter it covered.
    pub(crate) fn wait_durable(&self, mark: u64, flush: impl FnOnce(&S::Pending) -> io::Result<()>) -> Result<(), Failure> {
        let mut flush = Some(flush);
        let mut s = self.lock();
        let mut waited_for = None;
        loop {
            let f = s.flushes();
            if f.synced >= mark {
                return Ok(());
            }
            if let Some(failed) = &f.failed {
                if waited_for == Some(failed.attempt) && failed.covers >= mark {
                    return Err(failed.clone());
                }
            }
            if f.running {
                waited_for = Some(f.attempts);
                s = self.ended.wait(s).expect("group commit state");
                continue;
            }
            f.running = true;
            f.attempts += 1;
            let attempt = f.attempts;
            waited_for = Some(attempt);
            let (covers, pending) = s.begin_flush();
            drop(s);
            // The flush run here covers `mark`, so its end settles this wait either way.
            let run = flush.take().expect("a waiter runs one flush at most");
            let result = run(&pending);
            s = self.lock();
            let f = s.flushes();
            f.running = false;
            match &result {
                Ok(()) => f.synced = f.synced.max(covers),
                Err(e) => {
                    f.failed = Some(Failure {
                        attempt,
                        covers,
                        kind: e.kind(),
                        message: e.to_string(),
                    })
                }
            }
            s.end_flush(pending, result.is_ok());
            self.notify_ended();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[derive(Default)]
    struct Counter {
        noted: u64,
        flushes: Flushes,
    }

    impl Flushed for Counter {
        type Pending = u64;

        fn flushes(&mut self) -> &mut Flushes {
            &mut self.flushes
        }

        fn begin_flush(&mut self) -> (u64, u64) {
            (self.noted, self.noted)
        }

        fn end_flush(&mut self, _: u64, _: bool) {}
    }

    fn note(g: &GroupCommit<Counter>) -> u64 {
        let mut s = g.lock();
        s.noted += 1;
        s.noted
    }

    #[test]
    fn concurrent_writers_share_flushes_and_each_is_covered() {
        let g = Arc::new(GroupCommit::<Counter>::default());
        let runs = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (g, runs) = (g.clone(), runs.clone());
                std::thread::spawn(move || {
                    let mark = note(&g);
                    g.wait_durable(mark, |covers| {
                        assert!(*covers >= mark, "a flush covers its runner's change");
                        runs.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        Ok(())
                    })
                    .unwrap();
                    assert!(g.lock().flushes.synced() >= mark);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let runs = runs.load(Ordering::Relaxed);
        assert_eq!(g.lock().flushes.attempts(), runs);
        assert!(runs < 16, "{runs} flushes for 16 writers");
    }

    #[test]
    fn a_failure_reaches_the_writers_it_covered_and_the_next_writer_retries() {
        let g = GroupCommit::<Counter>::default();
        let mark = note(&g);
        let err = g.wait_durable(mark, |_| Err(io::Error::other("disk gone"))).unwrap_err();
        assert_eq!(err.to_error("syncing x").to_string(), "syncing x: disk gone");
        assert_eq!(g.lock().flushes.synced(), 0);
        // Not settled by the old failure: this writer runs a flush of its own.
        g.wait_durable(mark, |_| Ok(())).unwrap();
        assert_eq!(g.lock().flushes.attempts(), 2);
        assert_eq!(g.lock().flushes.synced(), 1);
    }

    #[tokio::test]
    async fn an_async_waiter_joins_a_running_flush_and_is_told_when_none_runs() {
        let g = Arc::new(GroupCommit::<Counter>::default());
        let mark = note(&g);
        assert!(!g.join_running(mark).await, "no flush runs: the caller has to run one");
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let flusher = {
            let g = g.clone();
            std::thread::spawn(move || {
                g.wait_durable(mark, |_| {
                    started_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    Ok(())
                })
            })
        };
        started_rx.recv().unwrap();
        let joined = tokio::spawn({
            let g = g.clone();
            async move { g.join_running(mark).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!joined.is_finished(), "waits while the flush runs");
        release_tx.send(()).unwrap();
        assert!(joined.await.unwrap(), "the flush it joined covered its change");
        flusher.join().unwrap().unwrap();
        assert!(g.join_running(mark).await);
    }

    #[test]
    fn a_change_made_durable_by_other_means_needs_no_flush() {
        let g = GroupCommit::<Counter>::default();
        let mark = note(&g);
        g.lock().flushes.made_durable(mark);
        g.wait_durable(mark, |_| panic!("no flush needed")).unwrap();
        assert_eq!(g.lock().flushes.attempts(), 0);
    }
}
