//! What lets the garbage collector run beside live requests: a record of the digests
//! requests touched recently, and a lock that orders "check that content exists, then
//! rely on it" (requests) against "check that nobody relies on it, then delete" (sweep).
//!
//! A request that makes content reachable (a manifest PUT, an upload's completion, a mount)
//! or that tells a client content exists (blob HEAD/GET, manifest HEAD/GET) touches the
//! digests involved while holding the lock shared. The sweep re-checks each candidate
//! under the lock held exclusively, so either the request saw the content deleted (and
//! the client uploads it again) or the sweep sees the touch and keeps it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::reference::Digest;

pub(crate) struct Activity {
    /// Off when no collector ever runs beside the server: requests then pay nothing.
    enabled: bool,
    lock: RwLock<()>,
    touched: Mutex<HashMap<Digest, SystemTime>>,
}

impl Activity {
    pub(crate) fn new(enabled: bool) -> Self {
        Activity {
            enabled,
            lock: RwLock::new(()),
            touched: Mutex::new(HashMap::new()),
        }
    }

    /// Held by a request from its existence checks until its writes are done. Never
    /// taken twice by one request: a queued sweep would make the second wait forever.
    pub(crate) async fn shared(&self) -> Option<RwLockReadGuard<'_, ()>> {
        if self.enabled {
            Some(self.lock.read().await)
        } else {
            None
        }
    }

    /// Held by the sweep while it re-checks and deletes one item.
    pub(crate) async fn exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.lock.write().await
    }

    pub(crate) fn touch(&self, digest: &Digest) {
        if self.enabled {
            self.touched
                .lock()
                .expect("activity lock")
                .insert(digest.clone(), SystemTime::now());
        }
    }

    pub(crate) fn touch_all<'a>(&self, digests: impl IntoIterator<Item = &'a Digest>) {
        if self.enabled {
            let now = SystemTime::now();
            let mut map = self.touched.lock().expect("activity lock");
            for d in digests {
                map.insert(d.clone(), now);
            }
        }
    }

    /// Whether a request touched `digest` after `since`.
    pub(crate) fn touched_since(&self, digest: &Digest, since: SystemTime) -> bool {
        self.touched
            .lock()
            .expect("activity lock")
            .get(digest)
            .is_some_and(|t| *t > since)
    }

    /// Drops records older than `before`, so the map holds only the grace window.
    pub(crate) fn forget_before(&self, before: SystemTime) {
        self.touched.lock().expect("activity lock").retain(|_, t| *t > before);
    }
}
