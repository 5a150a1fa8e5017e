//! What a process remembers of the workflow instances it wrote: each live instance's state at
//! the revision it committed. A batch write locks its instance rows reading only their
//! revisions (`keel_wf_instances.rev`, raised by every transaction that changes an instance or
//! one of its steps) and reads the full state — the instance row and its step rows — only of
//! instances whose revision is not the one remembered: new to this process, or moved on by
//! another process, by an API call on another connection, or by a transaction whose answer
//! came later than the next one's. A remembered state is only ever the committed state at its
//! revision, so a stale entry costs a read, never a wrong answer.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::workflow::WorkflowState;

/// Most instances remembered; a full cache starts again empty (ended instances leave at once,
/// so only a backlog of that many live instances fills it).
const MOST: usize = 50_000;

/// Instance id → (revision, state at that revision).
#[derive(Default)]
pub(super) struct StateCache {
    states: Mutex<HashMap<String, (i64, WorkflowState)>>,
}

impl StateCache {
    /// The state of `id` at revision `rev`, if remembered, taken out (the transaction that
    /// takes it puts back the state it commits; one that fails leaves it to be read again).
    pub(super) fn take(&self, id: &str, rev: i64) -> Option<WorkflowState> {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        match states.get(id) {
            Some((r, _)) if *r == rev => states.remove(id).map(|(_, st)| st),
            _ => None,
        }
    }

    /// Remembers `st` as committed at `rev` (unless a later revision is remembered); an ended
    /// instance is forgotten.
    pub(super) fn put(&self, rev: i64, st: &WorkflowState) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        if st.instance.status.is_final() {
            states.remove(&st.instance.id);
            return;
        }
        if let Some((r, _)) = states.get(&st.instance.id) {
            if *r >= rev {
                return;
            }
        } else if states.len() >= MOST {
            states.clear();
        }
        states.insert(st.instance.id.clone(), (rev, st.clone()));
    }
}
